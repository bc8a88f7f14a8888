"""train.batch_size: auto — the largest micro-batch that fits, found by measuring, with accumulation keeping the
effective batch the recipe asks for (train.effective_batch).

Candidates are the divisors of effective_batch, smallest first, so batch_size x grad_accum is exactly the asked
effective batch; each is stepped on the recipe's longest examples (training.probe) and fits when its
measured peak stays under the memory cap. The search stops at the first that does not fit (memory grows with the
batch). The cap: on CUDA the GPU's memory less a reserve for the CUDA context and allocator slack that the
allocator's peak does not count, a candidate that runs out of memory counting as not fitting; on CPU the RSS
this process has now plus most of the RAM still available, and since running out of RAM there kills the process
instead of raising, a candidate whose peak, extrapolated from the ones measured, would pass the cap is not tried.
On CPU the peak is the resident set, which depends on the C heap's history as well as on the batch: the run that
follows the search starts from another heap than the probe did, so a CPU peak must fit with a margin
(CPU_PEAK_MARGIN_SHARE). The CUDA allocator's peak is the tensors' own and repeats for the same shapes.
Each recompute / packing choice is resolved for the candidate as training would (peftkit.training.choices), and
the rig is rebuilt only when that choice changes.

HF Trainer's auto_find_batch_size halves per_device_train_batch_size on out-of-memory and leaves
gradient_accumulation_steps alone, so its effective batch shrinks (transformers PR #33281 proposes scaling it,
still open); axolotl states an effective `batch_size` beside `micro_batch_size` and derives the accumulation, which
is what train.effective_batch does here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import PeftkitError, Problem, RecipeError
from ..hardware import Hardware, Precision, available_ram_bytes, memory_in_use_mb
from ..recipe import Recipe
from ..rundir import read_meta
from .choices import device_memory_bytes, resolve
from .probe import Measurement, Rig, Workload, with_batch

SEARCH_STEPS = 2  # the first step creates the optimizer state; the second runs with it in place
CUDA_RESERVE_BYTES = 2**30  # CUDA context, cuBLAS workspaces: outside torch.cuda.max_memory_allocated
CUDA_RESERVE_SHARE = 0.05  # allocator fragmentation between allocated and reserved memory
CPU_RESERVE_SHARE = 0.10  # of the RAM available, left to the rest of the machine
# Two probes of one batch in one process differed by up to 2% of the resident set, and in 7 runs a run's training
# peak passed the peak measured for its batch by up to 2.6% (tests/training/test_batch_size.py's tiny run; the C
# heap's history, not the CPU, moves it)
CPU_PEAK_MARGIN_SHARE = 0.05


@dataclass(frozen=True)
class BatchChoice:
    recipe: Recipe           # with batch_size, grad_accum and effective_batch concrete
    batch_size: int
    grad_accum: int
    effective_batch: int
    cap_mb: float
    cap_why: str
    measurement: Measurement | None  # the chosen batch's
    tried: tuple[dict, ...]  # each candidate: batch_size, peak_mb (None: not run), fits, why

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["recipe"]
        return out

    def summary(self) -> str:
        peak = f", measured peak {self.measurement.peak_mb:,.0f} MB" if self.measurement else ""
        return (f"batch size auto: {self.batch_size} x {self.grad_accum} accumulation = {self.effective_batch} "
                f"examples a step{peak} (cap {self.cap_mb:,.0f} MB: {self.cap_why})")


def memory_cap(hardware: Hardware, memory_cap_bytes: int | None = None) -> tuple[int, str]:
    """(bytes a measured peak may reach, why). peftkit.hardware.peak_memory_mb is what is compared with it."""
    if memory_cap_bytes is not None:
        return memory_cap_bytes, "given"
    if hardware.cuda:
        total = device_memory_bytes()
        cap = int(total * (1 - CUDA_RESERVE_SHARE)) - CUDA_RESERVE_BYTES
        return cap, (f"{total / 2**30:.1f} GiB GPU less {CUDA_RESERVE_SHARE:.0%} and "
                     f"{CUDA_RESERVE_BYTES / 2**30:.0f} GiB for the CUDA context and allocator slack")
    available, source = available_ram_bytes()
    if available is None:
        available, source = device_memory_bytes() // 2, "half the RAM: the free amount is unknown here"
    in_use = memory_in_use_mb() * 2**20
    return int(in_use + available * (1 - CPU_RESERVE_SHARE)), (
        f"this process's {in_use / 2**20:,.0f} MB + {1 - CPU_RESERVE_SHARE:.0%} of the {available / 2**30:.1f} GiB "
        f"RAM available ({source})")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def predicted_peak_mb(points: list[tuple[int, float]], loaded_mb: float, batch_size: int) -> float:
    """A measured peak extrapolated to `batch_size`: along the last two measurements, or from the loaded model
    through the only one."""
    if len(points) >= 2:
        (b0, p0), (b1, p1) = points[-2], points[-1]
        slope = max(p1 - p0, 0.0) / (b1 - b0)
    else:
        (b1, p1), = points
        slope = max(p1 - loaded_mb, 0.0) / b1
    return p1 + slope * (batch_size - b1)


def search_batch_size(work: Workload, *, memory_cap_bytes: int | None = None,
                      steps: int = SEARCH_STEPS) -> BatchChoice:
    """The largest divisor of work.recipe's train.effective_batch whose worst-case micro-batch fits the cap."""
    effective = work.recipe.train.effective_batch
    cap, cap_why = memory_cap(work.hardware, memory_cap_bytes)
    cap_mb = cap / 2**20
    margin = 0.0 if work.hardware.cuda else CPU_PEAK_MARGIN_SHARE
    room_mb = cap_mb / (1 + margin)  # what a measured peak may reach
    plus = f" + {margin:.0%} for the resident set's variation" if margin else ""
    tried: list[dict] = []
    best: tuple[Recipe, Measurement] | None = None
    rig: Rig | None = None
    points: list[tuple[int, float]] = []
    try:
        for b in divisors(effective):
            recipe, choices = resolve(with_batch(work.recipe, b, effective // b), work.hardware, work.precision,
                                      config=work.config)
            if rig is None or (rig.choices.recompute.enabled, rig.choices.packing, rig.choices.attention) != \
                    (choices.recompute.enabled, choices.packing, choices.attention):
                if rig is not None:
                    rig.close()
                rig, points = None, []
                rig = Rig(work, recipe, choices)
            if not work.hardware.cuda and points:
                guess = predicted_peak_mb(points, rig.loaded_mb, b)
                if guess > room_mb:
                    tried.append({"batch_size": b, "peak_mb": None, "fits": False,
                                  "why": f"not run: extrapolated peak {guess:,.0f} MB{plus} > cap (on CPU running "
                                         "out of RAM kills the process)"})
                    break
            try:
                m = rig.probe(b, steps)
            except torch.cuda.OutOfMemoryError:
                tried.append({"batch_size": b, "peak_mb": None, "fits": False, "why": "CUDA out of memory"})
                break
            fits = m.peak_mb <= room_mb
            tried.append({"batch_size": b, "peak_mb": round(m.peak_mb, 1), "fits": fits,
                          "why": f"measured {m.peak_mb:,.0f} MB{plus} {'<=' if fits else '>'} cap"})
            if not fits:
                break
            best = (recipe, m)
            points.append((b, m.peak_mb))
    finally:
        if rig is not None:
            rig.close()
    if best is None:
        raise RecipeError(None, [Problem(
            "train.batch_size", f"auto: 1 example per micro-batch does not fit: {tried[0]['why']} "
            f"{cap_mb:,.0f} MB ({cap_why}); turn train.gradient_checkpointing on, shorten data.max_length or take "
            "a smaller base", "auto", True)])
    recipe, m = best
    t = recipe.train
    return BatchChoice(recipe, t.batch_size, t.grad_accum, effective, round(cap_mb, 1), cap_why, m, tuple(tried))


def choose_batch_size(recipe: Recipe, hardware: Hardware, precision: Precision, *, tokenizer, rows: list,
                      label_names, config, resume_from: Path | None = None, num_processes: int = 1,
                      memory_cap_bytes: int | None = None) -> BatchChoice:
    """For the trainer, once the data is prepared and before its model loads. A run resumed from `resume_from`
    keeps the batch its record says was chosen (the batch order depends on it), without measuring again."""
    if num_processes > 1:
        raise PeftkitError("train.batch_size: auto is measured in one process; with several, give a number")
    recorded = read_meta(resume_from) if resume_from is not None else None
    if recorded is not None and getattr(recorded, "batch_size", None):
        was = recorded.batch_size
        chosen = with_batch(recipe, was["batch_size"], was["grad_accum"])
        m = was.get("measurement")
        return BatchChoice(chosen, was["batch_size"], was["grad_accum"], was["effective_batch"], was["cap_mb"],
                           was["cap_why"], Measurement(**{**m, "shape": tuple(m["shape"])}) if m else None,
                           tuple(was.get("tried", ())))
    work = Workload(recipe, hardware, precision, tokenizer, rows, label_names, config, memory_in_use_mb())
    return search_batch_size(work, memory_cap_bytes=memory_cap_bytes)
