"""The data recipes shipped in recipes/: they validate, their data is where they say, and (integration) the
data builds with the real tokenizer and yields stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftkit import load_recipe
from peftkit.data import build_data
from peftkit.data.preview import compute_stats, render_preview

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
DATA_RECIPES = ["smollm2-qlora-codealpaca", "smollm2-qlora-hh-chat", "smollm2-qlora-toolcall",
                "smollm2-lora-shakespeare", "minilm-lora-sst2"]
SHARED = (RECIPES / "../../shared/data").resolve()
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not next to the project")


@pytest.mark.parametrize("name", DATA_RECIPES)
def test_recipe_validates_and_opens_with_its_command(name):
    file = RECIPES / f"{name}.yaml"
    recipe = load_recipe(file)
    assert recipe.name == name
    assert f"recipes/{name}.yaml" in file.read_text().split("\nname:")[0]  # the header shows how to run it


GPU_RECIPES = sorted(p.stem for p in (RECIPES / "gpu").glob("*.yaml"))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipe_validates_and_names_hub_sources(name):
    """recipes/gpu/: each validates offline, opens with its commands and the card it is sized for, and names a hub
    model and a hub dataset (training them needs the hub; planning them does not)."""
    file = RECIPES / "gpu" / f"{name}.yaml"
    recipe = load_recipe(file)
    header = file.read_text().split("\nname:")[0]
    assert recipe.name == name and f"recipes/gpu/{name}.yaml" in header and "Sized for" in header
    assert recipe.model.base.count("/") == 1 and recipe.data.path.count("/") == 1, (recipe.model.base, recipe.data.path)
    # the issue's `peftkit train recipes/gpu/... train.batch_size=auto`: the recipe states the effective batch it keeps
    auto = load_recipe(file, overrides=["train.batch_size=auto"]).train
    assert auto.batch_size == "auto" and auto.effective_batch == recipe.train.batch_size * recipe.train.grad_accum


def test_there_is_a_gpu_recipe_per_shipped_hub_model():
    assert len(GPU_RECIPES) >= 7


@needs_data
@pytest.mark.parametrize("name", DATA_RECIPES)
def test_recipe_data_paths_exist(name):
    data = load_recipe(RECIPES / f"{name}.yaml").data
    for path in (data.path, data.eval_path):
        if path:
            assert (RECIPES / path).exists(), path


# expected (skipped rows, label names) per recipe: what the data files are known to hold
EXPECTED = {
    "smollm2-qlora-codealpaca": (2, None),
    "smollm2-qlora-hh-chat": (1, None),
    "smollm2-qlora-toolcall": (0, None),
    "smollm2-lora-shakespeare": (0, None),
    "minilm-lora-sst2": (0, ("negative", "positive")),
}


@pytest.mark.integration
@needs_data
@pytest.mark.parametrize("name", DATA_RECIPES)
def test_recipe_data_builds_with_stats(name, smollm2_dir, minilm_dir):
    from transformers import AutoTokenizer

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    tok = AutoTokenizer.from_pretrained(minilm_dir if recipe.model.task == "sequence_classification" else smollm2_dir)
    bundle = build_data(recipe.data, tok, base_dir=RECIPES, seed=recipe.train.seed, task=recipe.model.task,
                        source_file=str(RECIPES / f"{name}.yaml"))
    skipped, labels = EXPECTED[name]
    assert bundle.report.train.skipped + bundle.report.eval.skipped == skipped
    assert bundle.label_names == labels
    stats = compute_stats(bundle, batch_size=recipe.train.batch_size)
    assert stats.examples > 100 and stats.trained_tokens > 0 and len(bundle.eval) > 0
    if recipe.data.limit:
        assert stats.examples == recipe.data.limit
    json.dumps(stats.to_dict()) and json.dumps(bundle.report.to_dict())
    assert "example 1" in str(render_preview(bundle, tok, 1, plain=True))
