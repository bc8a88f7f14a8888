"""data.packing: auto packs causal LM batches when activations are checkpointed (where packed rows measured faster
and leaner), except where PEFT's prompt learning would mix packed examples; explicit choices win."""

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe import recipe_from_dict


def recipe(packing="auto", method="lora", fmt="chat", task="causal_lm"):
    return recipe_from_dict({
        "name": "x", "model": {"base": "b", "task": task}, "adapter": {"method": method, "dropout": 0.0},
        "data": {"path": "d.jsonl", "format": fmt, "packing": packing},
    })


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "vera", "oft"])
def test_auto_packs_checkpointed_causal_lm_weight_methods(method):
    assert recipe(method=method).packs(checkpointing=True) is True
    assert recipe(method=method).packs(checkpointing=False) is False


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_auto_leaves_prompt_learning_padded(method):
    assert recipe(method=method).packs(checkpointing=True) is False


def test_auto_leaves_classification_padded():
    assert recipe(fmt="classification", task="sequence_classification").packs(checkpointing=True) is False


@pytest.mark.parametrize("checkpointing", [True, False])
def test_an_explicit_choice_wins(checkpointing):
    assert recipe(packing=False).packs(checkpointing) is False
    assert recipe(packing=True).packs(checkpointing) is True


def test_explicit_packing_with_prompt_tuning_is_refused():
    with pytest.raises((RecipeError, ValueError), match="data.packing to false"):
        recipe(packing=True, method="prompt_tuning")
