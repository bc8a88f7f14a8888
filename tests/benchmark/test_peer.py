"""Recipes the TRL route cannot mirror are refused up front, naming the key, before any process starts."""

import tempfile

import pytest

from peftkit.benchmark import run_bench
from peftkit.benchmark.peer import comparison_problems
from peftkit.errors import PeftkitError, RecipeError
from peftkit.recipe import recipe_from_dict, recipe_to_yaml


def test_lora_recipes_are_comparable(tiny_files):
    _, _, recipe = tiny_files
    assert comparison_problems(recipe) == []


@pytest.mark.parametrize("section, values, key", [
    ("adapter", {"method": "vera"}, "adapter.method"),
    ("adapter", {"lora_plus_ratio": 16}, "adapter.lora_plus_ratio"),
    ("adapter", {"init": "olora"}, "adapter.init"),
    ("train", {"modules_to_save_lr": 0.05}, "train.modules_to_save_lr"),
])
def test_refused_before_anything_runs(tiny_files, tmp_path, section, values, key):
    _, _, recipe = tiny_files
    raw = recipe.model_dump(mode="json")
    raw[section].update(values)
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe_to_yaml(recipe_from_dict(raw)))
    with pytest.raises(RecipeError) as err:
        run_bench(bad, out_dir=tmp_path / "out")
    assert key in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tiny_files, tmp_path):
    _, path, _ = tiny_files
    with pytest.raises(PeftkitError, match="--vs"):
        run_bench(path, vs="unsloth")
    with pytest.raises(PeftkitError, match="--repeats"):
        run_bench(path, repeats=0)
    with pytest.raises(PeftkitError, match="--name"):
        run_bench(path, name="../x", out_dir=tmp_path)


def test_a_failing_route_is_one_line_naming_its_log(tiny_files, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the failed run's work folder (kept for its log)
    _, _, recipe = tiny_files
    raw = recipe.model_dump(mode="json")
    raw["data"]["path"] = str(tmp_path / "missing.jsonl")
    bad = tmp_path / "missing-data.yaml"
    bad.write_text(recipe_to_yaml(recipe_from_dict(raw)))
    with pytest.raises(PeftkitError) as err:
        run_bench(bad, repeats=1, out_dir=tmp_path / "out")
    message = str(err.value)
    assert message.startswith("bench: the peftkit route failed (exit 2): error: ") and "missing.jsonl" in message
    assert "\n" not in message and message.rstrip(")").endswith("peftkit-0.log")
    assert not (tmp_path / "out").exists()
