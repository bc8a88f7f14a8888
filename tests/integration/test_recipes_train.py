"""Every shipped recipe trains end to end on its real model and data for two steps."""

from pathlib import Path

import pytest

import peftkit

RECIPES = sorted(p.name for p in Path("recipes").glob("*.yaml"))
SHARED = (Path("recipes") / "../../shared/data").resolve()  # where the recipes' data paths point
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not next to the project")]


SHORT = ["train.max_steps=2", "train.batch_size=2", "train.grad_accum=1", "train.warmup_steps=0",
         "train.checkpoint_every=null", "eval.before=false", "eval.max_examples=4", "eval.max_new_tokens=4",
         "data.limit=64"]


def short_run(name: str, out: Path, extra: list[str] = ()) -> peftkit.Recipe:
    return peftkit.load_recipe(Path("recipes") / name, [*SHORT, *extra, f"output.dir={out}"])


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_two_steps(name, tmp_path, smollm2_dir, minilm_dir):
    recipe = short_run(name, tmp_path / "run")
    if recipe.adapter.init_from:  # a fresh clone has no runs/: train the run it starts from (recipe of that name)
        start = peftkit.train(short_run(f"{Path(recipe.adapter.init_from).name}.yaml", tmp_path / "start"))
        recipe = short_run(name, tmp_path / "run", [f"adapter.init_from={start.run_dir}"])
    result = peftkit.train(recipe)
    assert result.metrics.train.steps == 2
    assert result.metrics.train.trained_tokens > 0
    assert all(v == v for v in result.metrics.eval.after.values())  # no NaN
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
