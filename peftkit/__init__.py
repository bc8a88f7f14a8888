"""peftkit: parameter-efficient fine-tuning from one recipe.

    import peftkit
    recipe = peftkit.load_recipe("recipes/quickstart.yaml", overrides=["train.lr=1e-4"])
    result = peftkit.train(recipe)                  # -> RunResult(run_dir, metrics, params)
    peftkit.evaluate([str(result.run_dir)])         # base vs adapter (vs merged); writes RUN/eval.json
    peftkit.merge(result.run_dir)                   # checked merge into the dequantized base
    peftkit.export(result.run_dir, format="gguf")   # GGUF + Ollama Modelfile
    peftkit.bench("recipes/quickstart.yaml")        # peftkit vs the plain TRL route, same work
    peftkit.plan(recipe, memory=12 * 2**30)         # will it fit a 12 GB card? -> MemoryPlan(estimate, fits, advice)

The verbs are plain functions here; the packages that do the work are nouns (training, evaluation, artifacts,
benchmark), so no name shadows another. Heavy libraries (torch, transformers) are imported by the functions that
need them, so validating a recipe or printing help stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DataError, ModelError, PeftkitError, RecipeError, RunDirError
from .recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from .artifacts.commands import ExportResult, MergeResult
    from .benchmark.runner import BenchResult
    from .planning.plan import MemoryPlan
    from .rundir import EvalRecord
    from .training.trainer import RunResult

__version__ = "0.1.0"


def train(recipe: Recipe, **kwargs) -> RunResult:
    """Train the recipe's adapter and write its run directory. See peftkit.training.trainer.train."""
    from .training.trainer import train as _train

    return _train(recipe, **kwargs)


def evaluate(targets: list[str], **kwargs) -> EvalRecord:
    """Score the base, each run's adapter and merged model on the same held-out rows; a run directory given first
    gets the table as eval.json / eval.md. See peftkit.evaluation.compare.evaluate."""
    from .evaluation.compare import evaluate as _evaluate

    return _evaluate(targets, **kwargs)


def merge(run_dir, **kwargs) -> MergeResult:
    """Merge a run's adapter into its dequantized base and check the result. See peftkit.artifacts.commands.merge."""
    from .artifacts.commands import merge as _merge

    return _merge(run_dir, **kwargs)


def export(run_dir, **kwargs) -> ExportResult:
    """Adapter folder + card, merged HF folder, or GGUF + Modelfile. See peftkit.artifacts.commands.export."""
    from .artifacts.commands import export as _export

    return _export(run_dir, **kwargs)


def bench(recipe_path, overrides=(), **kwargs) -> BenchResult:
    """The recipe trained by peftkit and by the plain TRL route, side by side. See peftkit.benchmark.runner."""
    from .benchmark.runner import run_bench

    return run_bench(recipe_path, overrides, **kwargs)


def plan(recipe: Recipe, **kwargs) -> MemoryPlan:
    """The recipe's memory, line by line, from the base's config alone; which common cards it fits; with
    memory=BYTES, the changes that make it fit. See peftkit.planning.plan.plan_recipe."""
    from .planning.plan import plan_recipe

    return plan_recipe(recipe, **kwargs)


__all__ = [
    "DataError", "ModelError", "PeftkitError", "Recipe", "RecipeError", "RunDirError", "bench", "evaluate", "export",
    "load_recipe", "merge", "plan", "train",
]
