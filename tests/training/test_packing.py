"""data.packing and model.attn_implementation: auto (peftkit.training.choices). auto packs causal LM batches
when activations are checkpointed (where packed rows measured faster and leaner), except where PEFT's prompt learning would mix packed examples; explicit choices win."""

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe import recipe_from_dict
from peftkit.training.choices import choose_attention, choose_packing


def recipe(packing="auto", method="lora", fmt="chat", task="causal_lm"):
    return recipe_from_dict({
        "name": "x", "model": {"base": "b", "task": task}, "adapter": {"method": method, "dropout": 0.0},
        "data": {"path": "d.jsonl", "format": fmt, "packing": packing},
    })


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "vera", "oft"])
def test_auto_packs_checkpointed_causal_lm_weight_methods(method):
    assert choose_packing(recipe(method=method), True) is True
    assert choose_packing(recipe(method=method), False) is False


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_auto_leaves_prompt_learning_padded(method):
    assert choose_packing(recipe(method=method), True) is False


def test_auto_leaves_classification_padded():
    assert choose_packing(recipe(fmt="classification", task="sequence_classification"), True) is False


@pytest.mark.parametrize("checkpointing", [True, False])
def test_an_explicit_choice_wins(checkpointing):
    assert choose_packing(recipe(packing=False), checkpointing) is False
    assert choose_packing(recipe(packing=True), checkpointing) is True


def test_explicit_packing_with_prompt_tuning_is_refused():
    with pytest.raises((RecipeError, ValueError), match="data.packing to false"):
        recipe(packing=True, method="prompt_tuning")


def test_attention_auto_is_eager_only_for_padded_decoder_batches_on_cpu():
    assert choose_attention("sdpa", "causal_lm", False, cuda=False) == "sdpa"
    assert choose_attention("eager", "causal_lm", True, cuda=True) == "eager"
    assert choose_attention("auto", "causal_lm", True, cuda=False) == "sdpa"  # packed rows
    assert choose_attention("auto", "causal_lm", False, cuda=False) == "eager"
    assert choose_attention("auto", "causal_lm", False, cuda=True) == "sdpa"
    assert choose_attention("auto", "sequence_classification", False, cuda=False) == "sdpa"
