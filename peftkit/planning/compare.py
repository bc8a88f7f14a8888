"""`peftkit plan --measure`: the measured steps beside the config-only estimate of the same batch.

The estimate is planned for what was measured: the device the steps ran on, the measured micro-batch, its
recompute and packing, data.max_length set to the longest example's tokens (the width the worst batch is padded
to; the plan otherwise assumes every row is max_length long; packed, one row as wide as the measured one), and
the batch's trained positions for the logits (the plan otherwise assumes every position carries loss). Like is
compared with like: the live tensors' peak (CUDA: torch.cuda.max_memory_allocated; CPU: training.tensor_peak)
against the estimate without its overhead line (the CUDA context and allocator slack, or the CPU process, lie
outside it). On CPU the process's resident-set peak is shown beside, against the estimate with its
process-baseline line: memory outside the tensors (libraries' own buffers, and what glibc's heap keeps after
frees) makes it the larger of the two, by an amount the plan does not model. Both sides leave out evaluation:
the steps measured are training steps.
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
        """The estimate of the tensors' peak: held + train."""
        return self.estimate.phase("held") + self.estimate.phase("train")

    @property
    def process_estimate_bytes(self) -> int:
        """The estimate of the whole process: held + train + the overhead line."""
        return self.estimate_bytes + self.estimate.phase("overhead")

    @property
    def tensor_mb(self) -> float:
        m = self.measurement
        return m.tensor_peak_mb if m.tensor_peak_mb is not None else m.peak_mb

    @property
    def ratio(self) -> float:
        """measured tensor peak / estimated: above 1 the plan was optimistic."""
        return self.tensor_mb * 2**20 / max(self.estimate_bytes, 1)

    @property
    def process_ratio(self) -> float | None:
        """CPU: the resident-set peak / the estimate with its process-baseline line."""
        if self.device != "cpu":
            return None
        return self.measurement.peak_mb * 2**20 / max(self.process_estimate_bytes, 1)

    def to_dict(self) -> dict:
        process = self.process_ratio
        return {"measurement": self.measurement.to_dict(), "estimate_bytes": self.estimate_bytes,
                "estimate_overrides": list(self.overrides), "ratio": round(self.ratio, 3),
                "process_estimate_bytes": self.process_estimate_bytes,
                "process_ratio": None if process is None else round(process, 3)}

    def summary(self) -> list[str]:
        m, mib = self.measurement, 2**20
        rows, width = m.shape
        lines = [
            f"measured on {m.device}: {m.steps} optimizer steps on the {m.batch_size} longest examples "
            f"(batch {rows} x {width} tokens, recompute {'on' if m.recompute else 'off'}, packing "
            f"{'on' if m.packing else 'off'}), {m.tokens_per_s:,.0f} tokens/s",
            f"  tensors at their peak {self.tensor_mb:,.0f} MB; estimate for that batch ({' '.join(self.overrides)}"
            f"{f', {m.trained_positions:,} trained positions' if m.trained_positions is not None else ''}): "
            f"{self.estimate_bytes / mib:,.0f} MB without "
            f"{'CUDA context/slack' if self.device == 'cuda' else 'the process'}; measured / estimate {self.ratio:.2f}",
        ]
        if self.process_ratio is not None:
            lines.append(
                f"  process resident-set peak {m.peak_mb:,.0f} MB (before loading {m.baseline_mb:,.0f} MB, loaded "
                f"{m.loaded_mb:,.0f} MB) against {self.process_estimate_bytes / mib:,.0f} "
                f"MB with the process baseline: {self.process_ratio:.2f} (memory outside the tensors is not "
                "planned)")
        return lines


def measure_plan(recipe: Recipe, *, steps: int = MEASURE_STEPS, config_file: str | Path | None = None) -> MeasuredPlan:
    m = measure(recipe, steps=steps)
    # packed: one row of the measured width holds the whole micro-batch (the plan fills batch x max_length)
    rows, length = (1, m.shape[1]) if m.packing else (m.batch_size, m.longest_tokens)
    overrides = (f"train.batch_size={rows}", "train.grad_accum=1", f"data.max_length={length}",
                 f"train.gradient_checkpointing={str(m.recompute).lower()}", f"data.packing={str(m.packing).lower()}")
    matched = with_overrides(recipe, ["train.effective_batch=null", *overrides])
    device = "cuda" if m.device.startswith("cuda") else "cpu"
    plan = plan_recipe(matched, device=device, config_file=config_file, trained_positions=m.trained_positions)
    return MeasuredPlan(m, plan.estimate, overrides)
