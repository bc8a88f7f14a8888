"""`peftkit plan`: will this recipe fit, and if not, what to change. Config -> inventory -> estimate -> cards,
advice when a memory size is given. No weights and no data are read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..recipe import Recipe
from .advice import Step, advise
from .cards import fits
from .config import read_config
from .estimate import Device, Estimate, estimate
from .inventory import Inventory, build_inventory


@dataclass(frozen=True)
class MemoryPlan:
    recipe: str
    base: str
    config_source: str
    estimate: Estimate
    fits: dict[str, bool]  # common card sizes -> fits
    memory: int | None  # the size asked about (--memory), bytes
    advice: tuple[Step, ...]  # empty when it fits `memory` or none was given

    @property
    def peak_bytes(self) -> int:
        return self.estimate.peak_bytes

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "base": self.base, "config": self.config_source, **self.estimate.to_dict(),
                "fits": self.fits, "memory": self.memory,
                "fits_memory": None if self.memory is None else self.peak_bytes <= self.memory,
                "advice": [asdict(s) for s in self.advice]}


def cpu_auto_dtype() -> str:
    """What `auto` precision means on this CPU (peftkit doctor shows the same choice)."""
    from ..hardware import auto_dtype, detect

    return auto_dtype(detect())[0]


def inventory_for(recipe: Recipe, config_file: str | Path | None = None) -> tuple[Inventory, str]:
    """The base's parameter inventory for this recipe, and where its config came from."""
    config = read_config(recipe.model.base, config_file)
    labels = recipe.data.label_names
    inv = build_inventory(config.values, task=recipe.model.task, skip_modules=recipe.model.quantization.skip_modules,
                          modules_to_save=recipe.adapter.modules_to_save, num_labels=len(labels) if labels else 2)
    return inv, config.source


def plan_recipe(recipe: Recipe, *, memory: int | None = None, device: Device = "cuda",
                config_file: str | Path | None = None, trained_positions: int | None = None) -> MemoryPlan:
    inv, source = inventory_for(recipe, config_file)
    cpu_dtype = cpu_auto_dtype() if device == "cpu" else "float32"

    def estimate_of(r: Recipe) -> Estimate:
        return estimate(r, inv, device=device, device_bytes=memory, cpu_dtype=cpu_dtype,
                        trained_positions=trained_positions)

    est = estimate_of(recipe)
    steps = advise(recipe, memory, estimate_of) if memory is not None and est.peak_bytes > memory else ()
    return MemoryPlan(recipe.name, recipe.model.base, source, est, fits(est.peak_bytes), memory, steps)
