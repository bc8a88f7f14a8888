"""Preference recipe keys: objective and data format must fit, each train.preference key is refused by the
objectives that do not read it, packing and reference-free precompute are refused, all naming the key."""

from __future__ import annotations

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe.load import recipe_from_dict

BASE = {"name": "x", "model": {"base": "m"}, "data": {"format": "preference", "path": "pairs.jsonl"}}


def _load(*overrides: str):
    return recipe_from_dict(BASE, overrides=list(overrides))


@pytest.mark.parametrize("overrides, key, words", [
    ((), "train.objective", "preference rows need a preference objective"),
    (("data.format=chat", "train.objective=dpo"), "train.objective", "objective dpo reads data.format preference"),
    (("data.format=unpaired_preference", "train.objective=dpo"), "train.objective", "not unpaired_preference"),
    (("train.objective=dpo", "train.preference.gamma=2"), "train", "preference.gamma is read by objective simpo"),
    (("train.objective=orpo", "train.preference.label_smoothing=0.1"), "train", "read by objective dpo/simpo"),
    (("train.objective=simpo", "train.precompute_ref=true"), "train", "uses no reference model"),
    (("train.objective=dpo", "data.packing=true"), "data", "set packing to false"),
    (("train.objective=dpo", "data.train_on_inputs=true"), "data", "compare answers only"),
    (("train.objective=dpo", "train.preference.beta=0"), "train.preference.beta", "greater than 0"),
])
def test_mistakes_name_the_key(overrides, key, words):
    with pytest.raises(RecipeError) as err:
        _load(*overrides)
    message = str(err.value)
    assert message.startswith(f"{key}:") or f"\n{key}:" in message or f" {key}:" in message, message
    assert words in message


def test_kto_reads_pairs_and_unpaired_rows():
    assert _load("train.objective=kto").train.objective == "kto"
    assert _load("train.objective=kto", "data.format=unpaired_preference").data.format == "unpaired_preference"


def test_beta_defaults_follow_the_objective():
    assert _load("train.objective=dpo").train.preference.beta_for("dpo") == 0.1
    assert _load("train.objective=simpo").train.preference.beta_for("simpo") == 2.0
    assert _load("train.objective=ipo", "train.preference.beta=0.3").train.preference.beta_for("ipo") == 0.3
