"""build_data end to end on a small tokenizer: splits, limits, mixing, bad rows, truncation, formats."""

from __future__ import annotations

import json

import pytest

from peftkit.data import IGNORE, build_data
from peftkit.errors import DataError, RecipeError
from peftkit.recipe.schema import DataSpec


def chat_row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def write(tmp_path, name: str, rows: list[dict]) -> str:
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


def build(tmp_path, tok, *, seed=0, task="causal_lm", **kw):
    return build_data(DataSpec(**kw), tok, base_dir=tmp_path, seed=seed, task=task)


def answers(tok, rows) -> list[str]:
    return [tok.decode([t for t, lab in zip(r["input_ids"], r["labels"]) if lab != IGNORE]) for r in rows]


def test_fraction_split_is_seeded_and_disjoint(tmp_path, fake_tokenizer):
    path = write(tmp_path, "d.jsonl", [chat_row(i) for i in range(40)])
    a = build(tmp_path, fake_tokenizer, format="chat", path=path, eval_fraction=0.25, seed=1)
    b = build(tmp_path, fake_tokenizer, format="chat", path=path, eval_fraction=0.25, seed=1)
    c = build(tmp_path, fake_tokenizer, format="chat", path=path, eval_fraction=0.25, seed=2)
    assert a.train == b.train and a.eval == b.eval and a.train != c.train
    assert len(a.train) == 30 and len(a.eval) == 10
    assert not set(answers(fake_tokenizer, a.train)) & set(answers(fake_tokenizer, a.eval))
    assert a.report.train.examples == 30 and a.report.eval.examples == 10
    assert all("prompt_ids" in r and "reference" in r for r in a.eval)
    assert all("prompt_ids" not in r for r in a.train)


def test_data_seed_overrides_the_seed_argument(tmp_path, fake_tokenizer):
    path = write(tmp_path, "d.jsonl", [chat_row(i) for i in range(20)])
    a = build(tmp_path, fake_tokenizer, format="chat", path=path, seed=1)
    b = build_data(DataSpec(format="chat", path=path, seed=7), fake_tokenizer, base_dir=tmp_path, seed=1)
    c = build_data(DataSpec(format="chat", path=path, seed=7), fake_tokenizer, base_dir=tmp_path, seed=2)
    assert b.train == c.train and a.train != b.train


def test_limit_counts_kept_examples_and_bad_rows_are_skipped(tmp_path, fake_tokenizer):
    rows = [chat_row(i) for i in range(10)]
    rows[3] = {"messages": [{"role": "user", "content": "no reply"}]}
    path = write(tmp_path, "d.jsonl", rows)
    with pytest.raises(DataError) as err:
        build(tmp_path, fake_tokenizer, format="chat", path=path, eval_path=path)
    assert err.value.row == 4 and "no assistant turn" in str(err.value)
    b = build(tmp_path, fake_tokenizer, format="chat", path=path, eval_path=path, on_bad_row="skip", limit=9)
    assert len(b.train) == 9 and b.report.train.skipped == 1
    assert b.report.eval.skipped == 1 and "row 4: conversation has no assistant turn" in b.report.skip_reasons[0]


def test_mix_adds_training_sources(tmp_path, fake_tokenizer):
    a = write(tmp_path, "a.jsonl", [chat_row(i) for i in range(10)])
    b = write(tmp_path, "b.jsonl", [chat_row(100 + i) for i in range(10)])
    bundle = build(tmp_path, fake_tokenizer, format="chat", path=a, eval_fraction=0.2, mix=[{"path": b, "limit": 3}])
    got = answers(fake_tokenizer, bundle.train)
    assert len(bundle.train) == 8 + 3
    assert sum(int(x.removeprefix("answer ").removesuffix("<|im_end|>")) >= 100 for x in got) == 3
    assert bundle.report.sources == (a, b)


def test_truncation_counted_and_unlearnable_rows_dropped(tmp_path, fake_tokenizer):
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "fox " * 50}]}
    hopeless = {"messages": [{"role": "user", "content": "dog " * 50}, {"role": "assistant", "content": "a"}]}
    path = write(tmp_path, "d.jsonl", [long, hopeless, chat_row(1)])
    b = build(tmp_path, fake_tokenizer, format="chat", path=path, eval_path=path, max_length=24)
    assert b.report.train.truncated == 1 and b.report.train.dropped == 1 and b.report.train.examples == 2
    assert all(len(r["input_ids"]) <= 24 and any(x != IGNORE for x in r["labels"]) for r in b.train)


def test_classification_labels_are_mapped_and_counted(tmp_path, fake_tokenizer):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film \t1\nbad film \t0\nfine \t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nawful \t0\n")
    kw = dict(format="classification", path="train.tsv", eval_path="dev.tsv", columns={"text": "sentence"})
    b = build(tmp_path, fake_tokenizer, task="sequence_classification", **kw)
    assert b.label_names == ("0", "1")
    assert sorted(r["labels"] for r in b.train) == [0, 1, 1] and b.eval[0]["labels"] == 0
    assert dict(b.report.label_counts) == {"0": 1, "1": 2}
    named = build(tmp_path, fake_tokenizer, task="sequence_classification", label_names=("negative", "positive"), **kw)
    assert named.label_names == ("negative", "positive") and sorted(r["labels"] for r in named.train) == [0, 1, 1]
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nawful \tmeh\n")
    with pytest.raises(DataError, match=r"dev.tsv, row 2: label 'meh' is not one of 0, 1"):
        build(tmp_path, fake_tokenizer, task="sequence_classification", label_names=("0", "1"), **kw)


def test_completion_holds_out_the_tail(tmp_path, fake_tokenizer):
    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "t.txt").write_text(text)
    b = build(tmp_path, fake_tokenizer, format="completion", path="t.txt", max_length=16, eval_fraction=0.1, limit=5)
    assert len(b.train) == 5 and b.report.train.truncated == 0
    assert all(len(r["input_ids"]) <= 16 for r in b.train + b.eval)
    stream = fake_tokenizer.encode(text, add_special_tokens=False) + [fake_tokenizer.eos_token_id]
    whole = len(stream) // 16 * 16  # a last window shorter than 2 tokens is dropped
    held = [t for r in b.eval for t in r["input_ids"]]
    assert held == stream[whole - len(held) : whole] or held == stream[-len(held):]  # the contiguous tail
    assert b.stop_token_ids == (fake_tokenizer.eos_token_id,)


def test_builtin_source(tmp_path, fake_tokenizer):
    b = build(tmp_path, fake_tokenizer, format="chat", path="builtin:person-extraction", limit=5)
    assert len(b.train) == 5 and len(b.eval) > 0 and b.report.sources == ("builtin:person-extraction",)
    with pytest.raises(DataError, match="is a chat dataset; set data.format: chat"):
        build(tmp_path, fake_tokenizer, format="alpaca", path="builtin:person-extraction")
    with pytest.raises(DataError, match="unknown builtin dataset; known: person-extraction"):
        build(tmp_path, fake_tokenizer, format="chat", path="builtin:nope")


def test_format_must_fit_the_task(tmp_path, fake_tokenizer):
    path = write(tmp_path, "d.jsonl", [chat_row(1), chat_row(2)])
    with pytest.raises(RecipeError, match="data.format: does not fit model.task sequence_classification"):
        build(tmp_path, fake_tokenizer, format="chat", path=path, task="sequence_classification")


def test_missing_chat_template_is_a_recipe_error(tmp_path, make_tokenizer):
    path = write(tmp_path, "d.jsonl", [chat_row(1), chat_row(2)])
    with pytest.raises(RecipeError, match="data.chat_template: the tokenizer has no chat template"):
        build(tmp_path, make_tokenizer(chat_template=None), format="chat", path=path, chat_template="tokenizer")
    b = build(tmp_path, make_tokenizer(chat_template=None), format="chat", path=path)
    assert b.report.template == "chatml"
