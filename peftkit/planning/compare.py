"""`peftkit plan --measure`: the measured steps beside the config-only estimate of the same batch.

The estimate is planned for what was measured: the device the steps ran on, the measured micro-batch, its
recompute and packing, and data.max_length set to the longest example's tokens (the width the worst batch is
padded to; the plan otherwise assumes every row is max_length long). Like is compared with like: on CUDA the allocator's peak against the
estimate without its overhead line (CUDA context and allocator slack lie outside torch.cuda.max_memory_allocated);
on CPU the process's resident-set peak against the estimate with its process-baseline line. Both sides leave out
evaluation: the steps measured are training steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..recipe import Recipe
from .estimate import Estimate, with_overrides
from .measure import MEASURE_STEPS, Measurement, measure
from .plan import plan_recipe


@dataclass(frozen=True)
class MeasuredPlan:
    measurement: Measurement
    estimate: Estimate       # planned for the measured device, batch and longest example
    overrides: tuple[str, ...]  # what the estimate was planned with, on top of the recipe

    @property
    def device(self) -> str:
        return "cuda" if self.measurement.device.startswith("cuda") else "cpu"

    @property
    def estimate_bytes(self) -> int:
        """The estimate of what the measurement reads: held + train, plus the process baseline on CPU."""
        e = self.estimate
        return e.phase("held") + e.phase("train") + (e.phase("overhead") if self.device == "cpu" else 0)

    @property
    def ratio(self) -> float:
        """measured / estimated: above 1 the plan was optimistic."""
        return self.measurement.peak_mb * 2**20 / max(self.estimate_bytes, 1)

    def to_dict(self) -> dict:
        return {"measurement": self.measurement.to_dict(), "estimate_bytes": self.estimate_bytes,
                "estimate_overrides": list(self.overrides), "ratio": round(self.ratio, 3)}

    def summary(self) -> list[str]:
        m, mib = self.measurement, 2**20
        rows, width = m.shape
        process = (f"; the process held {m.baseline_mb:,.0f} MB before loading, {m.loaded_mb:,.0f} MB loaded"
                   if self.device == "cpu" else f"; {m.loaded_mb:,.0f} MB allocated before the first step")
        return [
            f"measured on {m.device}: {m.steps} optimizer steps on the {m.batch_size} longest examples "
            f"(batch {rows} x {width} tokens, recompute {'on' if m.recompute else 'off'}, packing "
            f"{'on' if m.packing else 'off'})",
            f"  peak {m.peak_mb:,.0f} MB ({m.peak_kind}{process}), {m.tokens_per_s:,.0f} tokens/s",
            f"  estimate for that batch ({' '.join(self.overrides)}): {self.estimate_bytes / mib:,.0f} MB"
            f"{' without CUDA context/slack' if self.device == 'cuda' else ''}; measured / estimate "
            f"{self.ratio:.2f}",
        ]


def measure_plan(recipe: Recipe, *, steps: int = MEASURE_STEPS, config_file: str | Path | None = None) -> MeasuredPlan:
    m = measure(recipe, steps=steps)
    overrides = (f"train.batch_size={m.batch_size}", "train.grad_accum=1", f"data.max_length={m.longest_tokens}",
                 f"train.gradient_checkpointing={str(m.recompute).lower()}", f"data.packing={str(m.packing).lower()}")
    matched = with_overrides(recipe, ["train.effective_batch=null", *overrides])
    device = "cuda" if m.device.startswith("cuda") else "cpu"
    return MeasuredPlan(m, plan_recipe(matched, device=device, config_file=config_file).estimate, overrides)
