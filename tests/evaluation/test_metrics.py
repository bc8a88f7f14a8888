"""Each metric against values worked out by hand, through the public scoring functions."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from peftkit.errors import PeftkitError
from peftkit.evaluation.metrics import ALL_METRICS, GENERATION_METRICS, LABEL_METRICS, extract_final_number, rouge_l_f1
from peftkit.evaluation.metrics.rouge_l import lcs_length
from peftkit.evaluation.scoring import group_metrics, perplexity_from_loss, score_generations, score_labels


def test_registry_matches_the_recipe_schema():
    from typing import get_args

    from peftkit.recipe.schema.eval import Metric

    assert set(ALL_METRICS) == set(get_args(Metric))


# --- exact_match -------------------------------------------------------------------------------


def test_exact_match_strips_only_surrounding_whitespace():
    predictions = ["  Paris\n", "paris", "New  York", "", "ok"]
    references = ["Paris", "Paris", "New York", "", "no"]
    # hits: "Paris" (stripped), "" == "" ; misses: case, inner spacing, wrong word
    assert score_generations(["exact_match"], predictions, references) == {"exact_match": pytest.approx(2 / 5)}


def test_exact_match_all_wrong_and_empty_prediction():
    assert score_generations(["exact_match"], ["", "b"], ["a", "a"]) == {"exact_match": 0.0}
    assert score_generations(["exact_match"], ["a", "b"], ["a", "b"]) == {"exact_match": 1.0}


# --- rouge_l -----------------------------------------------------------------------------------


def test_lcs_length_by_hand():
    assert lcs_length("a b c d e".split(), "a c e".split()) == 3
    assert lcs_length("x y".split(), "a b".split()) == 0
    assert lcs_length("b a".split(), "a b a".split()) == 2
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_per_example_by_hand():
    # LCS("the cat sat on the mat", "the cat on a mat") = the cat on mat = 4
    # P = 4/6, R = 4/5, F = 2PR/(P+R) = (2*4/6*4/5)/(4/6+4/5) = 8/11
    assert rouge_l_f1("the cat sat on the mat", "the cat on a mat") == pytest.approx(8 / 11)
    assert rouge_l_f1("a b c", "a b c") == 1.0
    assert rouge_l_f1("x y", "a b") == 0.0
    assert rouge_l_f1("", "a b") == 0.0  # empty prediction
    assert rouge_l_f1("Cat", "cat") == 0.0  # tokens compared exactly


def test_rouge_l_mean_over_examples():
    predictions = ["the cat sat on the mat", "", "a b c"]
    references = ["the cat on a mat", "something", "a   b\nc"]  # any whitespace separates tokens
    expected = (8 / 11 + 0.0 + 1.0) / 3
    assert score_generations(["rouge_l"], predictions, references) == {"rouge_l": pytest.approx(expected)}


# --- numeric_match -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 1,234", Decimal(1234)),
        ("The answer is 1234.", Decimal(1234)),
        ("First 3 then 5, so 8", Decimal(8)),
        ("#### -7 apples, then 12", Decimal(-7)),  # first number after the marker
        ("costs $2.50 in total", Decimal("2.50")),
        ("from 2023-05", Decimal(5)),  # a hyphen between digits is not a minus sign
        ("no digits here", None),
        ("#### ", None),
        ("", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_numeric_match_compares_numbers_not_strings():
    predictions = ["The answer is 1234.", "#### 5.0", "I think 41", "", "#### 3"]
    references = ["#### 1,234", "#### 5", "#### 42", "#### 0", "no number at all"]
    # hits: 1234 == 1,234 ; 5.0 == 5 ; misses: 41 vs 42, empty prediction, reference without number
    assert score_generations(["numeric_match"], predictions, references) == {"numeric_match": pytest.approx(2 / 5)}


def test_several_generation_metrics_at_once_keep_the_requested_order():
    scores = score_generations(["rouge_l", "exact_match", "numeric_match"], ["#### 4"], ["#### 4"])
    assert list(scores) == ["rouge_l", "exact_match", "numeric_match"]
    assert scores == {"rouge_l": 1.0, "exact_match": 1.0, "numeric_match": 1.0}


# --- classification ----------------------------------------------------------------------------


def test_binary_scores_use_class_one_as_positive():
    predictions = [1, 1, 0, 0, 1, 0]
    references = [1, 0, 0, 1, 1, 0]
    # TP = 2 (rows 0, 4), FP = 1 (row 1), FN = 1 (row 3), correct = 4 of 6
    scores = score_labels(["accuracy", "precision", "recall", "f1"], predictions, references, num_labels=2)
    assert scores == {
        "accuracy": pytest.approx(4 / 6),
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
    }


def test_binary_precision_differs_from_recall():
    # TP = 1, FP = 2, FN = 0: P = 1/3, R = 1, F1 = 2*(1/3)/(4/3) = 1/2
    scores = score_labels(["precision", "recall", "f1"], [1, 1, 1, 0], [1, 0, 0, 0], num_labels=2)
    assert scores == {"precision": pytest.approx(1 / 3), "recall": 1.0, "f1": pytest.approx(0.5)}


def test_binary_zero_division_scores_zero():
    # The positive class is never predicted nor present: every ratio divides by zero.
    scores = score_labels(["accuracy", "precision", "recall", "f1"], [0, 0], [0, 0], num_labels=2)
    assert scores == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_all_wrong():
    scores = score_labels(["accuracy", "precision", "recall", "f1"], [0, 1, 0], [1, 0, 1], num_labels=2)
    assert scores == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_multiclass_macro_average_by_hand():
    predictions = [0, 0, 1, 1, 2, 2, 2]
    references = [0, 1, 1, 2, 2, 2, 0]
    # class 0: TP 1, predicted 2, actual 2 -> P 1/2, R 1/2, F1 1/2
    # class 1: TP 1, predicted 2, actual 2 -> P 1/2, R 1/2, F1 1/2
    # class 2: TP 2, predicted 3, actual 3 -> P 2/3, R 2/3, F1 2/3
    # class 3 occurs nowhere and is not averaged in.
    macro = (1 / 2 + 1 / 2 + 2 / 3) / 3
    scores = score_labels(["accuracy", "precision", "recall", "f1"], predictions, references, num_labels=4)
    assert scores == {
        "accuracy": pytest.approx(4 / 7),
        "precision": pytest.approx(macro),
        "recall": pytest.approx(macro),
        "f1": pytest.approx(macro),
    }


def test_macro_f1_is_the_mean_of_per_class_f1():
    predictions = [0, 0, 0, 1, 2]
    references = [0, 1, 2, 1, 2]
    # class 0: P 1/3, R 1 -> F1 1/2 ; class 1: P 1, R 1/2 -> F1 2/3 ; class 2: P 1, R 1/2 -> F1 2/3
    macro_p, macro_r = (1 / 3 + 1 + 1) / 3, (1 + 1 / 2 + 1 / 2) / 3
    macro_f1 = (1 / 2 + 2 / 3 + 2 / 3) / 3
    scores = score_labels(["precision", "recall", "f1"], predictions, references, num_labels=3)
    assert scores["precision"] == pytest.approx(macro_p)
    assert scores["recall"] == pytest.approx(macro_r)
    assert scores["f1"] == pytest.approx(macro_f1)
    # ...which is not the F1 of the macro precision and recall (7/9 and 2/3 give 0.7179...).
    assert scores["f1"] != pytest.approx(2 * macro_p * macro_r / (macro_p + macro_r))


def test_label_outside_range_is_a_user_error():
    with pytest.raises(PeftkitError, match=r"reference label 3 at example 1 is outside 0\.\.2"):
        score_labels(["accuracy"], [0, 1], [0, 3], num_labels=3)


# --- names, loss, misuse -----------------------------------------------------------------------


def test_unknown_metric_names_itself_and_the_valid_ones():
    with pytest.raises(PeftkitError) as caught:
        score_generations(["exact_match", "bleu"], ["a"], ["a"])
    message = str(caught.value)
    assert "'bleu'" in message
    for name in ALL_METRICS:
        assert name in message


def test_metric_of_the_other_kind_is_refused():
    with pytest.raises(PeftkitError, match="'accuracy' does not score generated text"):
        score_generations(["accuracy"], ["a"], ["a"])
    with pytest.raises(PeftkitError, match="'rouge_l' does not score class labels"):
        score_labels(["rouge_l"], [0], [0], num_labels=2)


def test_empty_and_mismatched_inputs():
    with pytest.raises(PeftkitError, match="no examples"):
        score_generations(["exact_match"], [], [])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_labels(["accuracy"], [0, 1], [0], num_labels=2)


def test_group_metrics_sorts_by_kind_and_drops_duplicates():
    groups = group_metrics(["loss", "f1", "rouge_l", "perplexity", "accuracy", "loss"])
    assert groups.loss == ("loss", "perplexity")
    assert groups.generation == ("rouge_l",)
    assert groups.labels == ("f1", "accuracy")
    with pytest.raises(PeftkitError, match="'acc'"):
        group_metrics(["acc"])


def test_perplexity_from_loss():
    assert perplexity_from_loss(0.0) == 1.0
    assert perplexity_from_loss(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity_from_loss(1000.0) == math.inf  # exp overflows a float
    assert perplexity_from_loss(math.inf) == math.inf
    assert math.isnan(perplexity_from_loss(math.nan))


def test_scoring_writes_nothing_under_the_home_cache(tmp_path, monkeypatch):
    # evaluate's default cache lives under HF_HOME; we point it at an empty folder and check it stays so.
    import evaluate.config

    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", tmp_path / "metrics")
    score_generations(list(GENERATION_METRICS), ["a"], ["a"])
    score_labels(list(LABEL_METRICS), [0], [0], num_labels=2)
    assert not (tmp_path / "metrics").exists()
