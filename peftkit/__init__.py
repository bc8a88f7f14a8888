"""peftkit: parameter-efficient fine-tuning from one recipe.

    import peftkit
    recipe = peftkit.load_recipe("recipes/quickstart.yaml", overrides=["train.lr=1e-4"])
    result = peftkit.train(recipe)       # -> RunResult(run_dir, metrics, params)
    peftkit.merge(result.run_dir)        # checked merge into the dequantized base
    peftkit.evaluate([str(result.run_dir)])

Export and bench live in their packages (peftkit.export.commands.export, peftkit.bench.run_bench): a
top-level function of the same name would be rebound by Python whenever the package is imported.

Heavy libraries (torch, transformers) are imported by the functions that need them, so validating a
recipe or printing help stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import train as _train_package  # noqa: F401  (light: its __init__ imports nothing)
from .errors import DataError, ModelError, PeftkitError, RecipeError, RunDirError
from .recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from .train.session import RunResult

__version__ = "0.1.0"


# The subpackage peftkit.train was imported above, before this function is bound, so the name
# `peftkit.train` stays this function: Python binds a submodule onto its parent only on first import.
def train(recipe: Recipe, **kwargs) -> "RunResult":
    """Train the recipe's adapter and write its run directory. See peftkit.train.session.train."""
    from .train.session import train as _train

    return _train(recipe, **kwargs)


def evaluate(targets: list[str], **kwargs):
    """Score the base, each run's adapter and merged model on the same held-out rows. See peftkit.eval.compare."""
    from .eval.compare import evaluate_models

    return evaluate_models(targets, **kwargs)


def merge(run_dir, **kwargs):
    """Merge a run's adapter into its dequantized base and check the result. See peftkit.export.commands.merge."""
    from .export.commands import merge as _merge

    return _merge(run_dir, **kwargs)


__all__ = [
    "DataError", "ModelError", "PeftkitError", "Recipe", "RecipeError", "RunDirError", "evaluate", "load_recipe",
    "merge", "train",
]
