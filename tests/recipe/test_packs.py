"""data.packing: auto packs causal LM batches, except where PEFT's prompt learning would mix packed examples."""

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe import recipe_from_dict


def recipe(packing="auto", method="lora", fmt="chat", task="causal_lm"):
    return recipe_from_dict({
        "name": "x", "model": {"base": "b", "task": task}, "adapter": {"method": method, "dropout": 0.0},
        "data": {"path": "d.jsonl", "format": fmt, "packing": packing},
    })


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "vera", "oft"])
def test_auto_packs_causal_lm_weight_methods(method):
    assert recipe(method=method).packs is True


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_auto_leaves_prompt_learning_padded(method):
    assert recipe(method=method).packs is False


def test_auto_leaves_classification_padded():
    assert recipe(fmt="classification", task="sequence_classification").packs is False


def test_an_explicit_choice_wins():
    assert recipe(packing=False).packs is False
    assert recipe(packing=True).packs is True


def test_explicit_packing_with_prompt_tuning_is_refused():
    with pytest.raises((RecipeError, ValueError), match="data.packing to false"):
        recipe(packing=True, method="prompt_tuning")
