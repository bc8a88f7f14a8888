"""measure(recipe): a few real optimizer steps on the recipe's longest examples (the worst micro-batch training
can meet), with the peak memory and speed they took; nothing is written. The steps are the trainer's own
(peftkit.training.probe); `peftkit plan --measure` sets them beside the estimate (peftkit.planning.compare)."""

from __future__ import annotations

from ..hardware import Hardware
from ..recipe import Recipe
from ..training.batch_size import search_batch_size
from ..training.choices import resolve
from ..training.probe import MEASURE_STEPS, Measurement, Rig, prepare_workload, with_batch

__all__ = ["MEASURE_STEPS", "Measurement", "measure"]


def measure(recipe: Recipe, *, steps: int = MEASURE_STEPS, batch_size: int | None = None,
            hardware: Hardware | None = None) -> Measurement:
    """`steps` real optimizer steps of `recipe` on its longest examples (`batch_size` overrides the recipe's
    train.batch_size). A recipe with batch_size auto is measured at the batch the search picks
    (peftkit.training.batch_size)."""
    work = prepare_workload(recipe, hardware)
    recipe = work.recipe if batch_size is None else with_batch(work.recipe, batch_size)
    if recipe.train.batch_size == "auto":  # the batch the search picks, stepped again for the tensors' peak
        choice = search_batch_size(work)
        recipe = with_batch(work.recipe, choice.batch_size, choice.grad_accum)
    recipe, choices = resolve(recipe, work.hardware, work.precision, config=work.config)
    with Rig(work, recipe, choices) as rig:
        return rig.probe(recipe.train.batch_size, steps, tensors=True)
