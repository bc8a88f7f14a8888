"""data.hub: the public hub dataset behind a recipe's local data files, as typed recipe keys (validated offline)."""

from __future__ import annotations

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe import recipe_from_dict
from peftkit.recipe.keys import describe_keys

BASE = {"name": "t", "model": {"base": "org/model"}}


def data(**keys):
    return recipe_from_dict({**BASE, "data": {"format": "chat", **keys}}).data


def problems(**keys) -> dict[str, str]:
    with pytest.raises(RecipeError) as err:
        data(**keys)
    assert len(str(err.value).splitlines()) == 1
    return {p.key: p.message for p in err.value.problems}


def test_a_local_copy_with_its_hub_source():
    d = data(path="d.jsonl", hub={"id": "Anthropic/hh-rlhf", "data_dir": "helpful-base", "split": "test"})
    assert (d.hub.id, d.hub.data_dir, d.hub.split, d.hub.config, d.hub.revision) == (
        "Anthropic/hh-rlhf", "helpful-base", "test", None, None)


def test_hub_alone_is_enough_and_its_eval_split_is_the_held_out_source():
    d = data(hub={"id": "org/chats", "eval_split": "test"}, eval_fraction=0)
    assert d.path is None and d.hub.split == "train" and d.hub.eval_split == "test"


def test_without_path_or_hub_path_is_required():
    assert problems()["data.path"].startswith("required key is missing")


def test_each_local_file_has_its_hub_split():
    local_eval_only = problems(path="t.tsv", eval_path="d.tsv", hub={"id": "o/d"})
    assert "eval_path needs hub.eval_split" in local_eval_only["data"]
    hub_eval_only = problems(path="t.tsv", hub={"id": "o/d", "eval_split": "v"})
    assert "hub.eval_split stands in for eval_path" in hub_eval_only["data"]


def test_bad_hub_keys_are_named():
    assert problems(path="d.jsonl", hub={"id": "no-owner"})["data.hub.id"] == "is not a hub dataset id (owner/name)"
    assert "did you mean data.hub.split" in problems(path="d.jsonl", hub={"id": "o/d", "splt": "x"})["data.hub.splt"]
    assert "needs no hub source" in problems(path="builtin:person-extraction", hub={"id": "o/d"})["data.path"]


def test_the_keys_are_listed_with_their_descriptions():
    rows = {key: doc for key, _, _, doc in describe_keys()}
    for key in ("data.hub.id", "data.hub.config", "data.hub.data_dir", "data.hub.split", "data.hub.eval_split",
                "data.hub.revision"):
        assert rows[key]


def test_a_mixed_source_may_name_its_hub_dataset():
    d = data(path="d.jsonl", mix=[{"hub": {"id": "org/more", "split": "train"}, "limit": 10}, {"path": "x.jsonl"}])
    assert d.mix[0].path is None and d.mix[0].hub.id == "org/more"
    assert problems(path="d.jsonl", mix=[{"limit": 3}])["data.mix.0.path"].startswith("required key is missing")
    assert "eval_split does not apply" in problems(path="d.jsonl", mix=[{"hub": {"id": "o/d", "eval_split": "v"}}])[
        "data.mix.0.hub"]
