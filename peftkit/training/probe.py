"""Probing a recipe: a few real optimizer steps on its longest examples, and what they cost. Used by
train.batch_size auto (training.batch_size) and by `peftkit plan --measure` (peftkit.planning.measure).

The model, adapter, data, collator, optimizer and loop are the trainer's own (load_base, attach_adapter,
resolve, make_collator, build_optimizer, fit), so what is measured is what `peftkit train` will run. The batch is
the worst one training can meet: the `batch_size` longest training examples (preference objectives: that many
pairs, two sequences each), stepped `steps` times (forward, backward, optimizer step: the optimizer's state is
part of the peak). dpo/ipo/kto score their reference with the adapter switched off, the costlier of the two ways
a run may take (a precomputed reference is a table lookup during the steps).

Peak memory is peftkit.hardware's: the CUDA allocator's peak on a GPU; on CPU the resident-set high-water mark,
which is the whole process's, so `baseline_mb` (the process before anything loaded) is reported beside it;
reset_peak_memory hands the free C heap back first, here and in the trainer alike. `peftkit plan --measure` also
asks for the tensors' own peak (training.tensor_peak; on CPU over one more step, after the timed ones), which
leaves out the interpreter and the C heap's leftovers, as CUDA's allocator peak does.
Nothing is written: no run directory, no checkpoint.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from itertools import repeat

import torch
from accelerate import Accelerator

from ..adapters import attach_adapter, param_groups
from ..data import make_collator
from ..data.collate import with_kl_partners
from ..data.prepare import prepare_data
from ..hardware import (
    Hardware, Precision, detect, memory_in_use_mb, peak_memory_mb, release_free_heap, reset_peak_memory,
)
from ..modeling.load import base_config, load_base
from ..modeling.tokens import trained_tokens
from ..recipe import Recipe, recipe_from_dict
from ..recipe.schema.train import REFERENCE_OBJECTIVES
from .choices import Choices, resolve_precision
from .loop import FitState, StepLog, fit
from .optim import build_optimizer, build_scheduler
from .recompute import enable_recompute
from .reference import ReferenceChoice, build_references
from .tensor_peak import TensorPeak

MEASURE_STEPS = 3


@dataclass(frozen=True)
class Measurement:
    peak_mb: float           # during the steps: CUDA allocator peak, or the process's resident-set high-water mark
    peak_kind: str           # "cuda_max_memory_allocated" | "rss_peak"
    baseline_mb: float       # in use before the model loaded (CPU: the whole process, which peak_mb includes)
    loaded_mb: float         # in use with model, adapter and optimizer built, before the first step
    tokens_per_s: float      # non-pad tokens a second, over the steps after the first (warm-up) when there are two+
    batch_size: int          # examples per micro-batch
    shape: tuple[int, int]   # the measured batch's input_ids: rows x tokens (pairs: 2 rows each; packed: 1 row)
    longest_tokens: int      # the longest training example's tokens (a pair: its longer answer)
    steps: int
    device: str
    recompute: bool
    packing: bool
    cpu_model: str
    cpu_isa: dict[str, bool]
    tensor_peak_mb: float | None = None  # live tensors at their highest (CUDA: peak_mb); None: not asked for
    trained_positions: int | None = None  # the measured batch's positions that carry loss (all rows together)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """What the measured steps need besides the model: the recipe with precision resolved, its training rows
    (kto: with their mismatched partners, as the trainer builds them), the tokenizer and the base's config."""

    recipe: Recipe
    hardware: Hardware
    precision: Precision
    tokenizer: object
    rows: list
    label_names: tuple[str, ...] | None
    config: object
    baseline_mb: float


def prepare_workload(recipe: Recipe, hardware: Hardware | None = None) -> Workload:
    gc.collect()  # the baseline is what is alive, as the peak (reset_peak_memory) starts from it
    release_free_heap()
    baseline = memory_in_use_mb()
    hardware = hardware or detect()
    recipe, precision = resolve_precision(recipe, hardware)
    tokenizer, data = prepare_data(recipe)
    rows = data.train
    if recipe.train.objective == "kto":
        rows = with_kl_partners(rows, recipe.data.max_length)
    return Workload(recipe, hardware, precision, tokenizer, rows, data.label_names, base_config(recipe.model), baseline)


def with_batch(recipe: Recipe, batch_size: int, grad_accum: int | None = None) -> Recipe:
    """The recipe with a concrete micro-batch (and accumulation), validated again."""
    raw = recipe.model_dump(mode="json")
    raw["train"]["batch_size"] = batch_size
    if grad_accum is not None:
        raw["train"]["grad_accum"] = grad_accum
    if raw["train"]["effective_batch"] is not None:
        raw["train"]["effective_batch"] = batch_size * raw["train"]["grad_accum"]
    return recipe_from_dict(raw, source=f"recipe {recipe.name} (batch {batch_size})")


def example_length(row: dict) -> int:
    if "chosen" in row:
        return max(len(row["chosen"]["input_ids"]), len(row["rejected"]["input_ids"]))
    return len(row["input_ids"])


def longest_rows(rows: list[dict], n: int) -> list[dict]:
    """The n longest rows, longest first (cycled when there are fewer than n)."""
    order = sorted(range(len(rows)), key=lambda i: -example_length(rows[i]))
    return [rows[order[i % len(order)]] for i in range(n)]


class Rig:
    """The model, adapter and optimizer of one resolved recipe, built once and stepped on worst-case batches of
    several sizes (the batch-size search probes each candidate on the same rig). close() frees it."""

    def __init__(self, work: Workload, recipe: Recipe, choices: Choices):
        self.work, self.recipe, self.choices = work, recipe, choices
        t = recipe.train
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=not work.hardware.cuda)
        num_labels = len(work.label_names or ()) or None
        base = load_base(recipe.model, num_labels=num_labels, label_names=work.label_names,
                         device=self.accelerator.device, tokenizer=work.tokenizer)
        model = attach_adapter(base.model, recipe.adapter, task=recipe.model.task, total_steps=t.max_steps)
        if choices.recompute.enabled:
            enable_recompute(model, offload=t.checkpoint_offload)
        self.collate = make_collator(work.tokenizer, packing=choices.packing, task=recipe.model.task,
                                     objective=t.objective)
        groups = param_groups(model, recipe.adapter, t.lr, t.weight_decay, saved_lr=t.modules_to_save_lr)
        optimizer = build_optimizer(groups, t)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.reference = None
        if t.objective in REFERENCE_OBJECTIVES:
            self.reference, _ = build_references(
                ReferenceChoice("adapter_off", "the base", "measured steps"), self.accelerator.unwrap_model(self.model),
                train_rows=[], eval_rows=[], recipe=recipe, collate=self.collate, batch_size=1,
                device=self.accelerator.device, world=1, run_dir=None, resumed=False, main=False)
        release_free_heap()
        self.loaded_mb = memory_in_use_mb()

    def probe(self, batch_size: int, steps: int = MEASURE_STEPS, *, tensors: bool = False) -> Measurement:
        """`steps` optimizer steps on the `batch_size` longest examples; `tensors`: also the live tensors' peak (on
        CPU one more step under the profiler, after the timed ones: it slows steps and holds memory of its own).
        On CUDA, running out of memory raises torch.cuda.OutOfMemoryError (the gradients are dropped first, so the
        caller can go on)."""
        rows = longest_rows(self.work.rows, batch_size)
        batch = self.collate(rows)
        logs: list[StepLog] = []
        reset_peak_memory()  # on CPU: after handing back the free heap, so the peak starts from what is alive
        self._steps(batch, batch_size, steps, logs)
        peak, kind = peak_memory_mb()
        tensor_peak = None
        if tensors and self.accelerator.device.type == "cuda":
            tensor_peak = peak  # the CUDA allocator's peak is the tensors'
        elif tensors:
            with TensorPeak() as live:
                self._steps(batch, batch_size, 1, [])
            tensor_peak = live.peak_bytes / 2**20
        first, last = logs[0], logs[-1]
        if len(logs) > 1 and last.elapsed_s > first.elapsed_s:
            rate = (last.tokens - first.tokens) / (last.elapsed_s - first.elapsed_s)
        else:
            rate = last.tokens / max(last.elapsed_s, 1e-9)
        hw = self.work.hardware
        return Measurement(
            peak_mb=peak, peak_kind=kind, baseline_mb=self.work.baseline_mb, loaded_mb=self.loaded_mb,
            tokens_per_s=rate, batch_size=batch_size, shape=tuple(batch["input_ids"].shape),
            longest_tokens=example_length(rows[0]), trained_positions=trained_tokens(batch["labels"]),
            steps=len(logs), device=str(self.accelerator.device),
            recompute=self.choices.recompute.enabled, packing=self.choices.packing, cpu_model=hw.cpu_model,
            cpu_isa=hw.isa(), tensor_peak_mb=tensor_peak,
        )

    def _steps(self, batch: dict, batch_size: int, steps: int, logs: list[StepLog]) -> None:
        spec = self.recipe.train.model_copy(update={
            "max_steps": steps, "batch_size": batch_size, "grad_accum": 1, "log_every": 1, "checkpoint_every": None})
        try:
            fit(self.model, self.optimizer, build_scheduler(self.optimizer, spec), (dict(batch) for _ in repeat(None)),
                self.accelerator, spec, FitState(), on_step=logs.append, reference=self.reference)
        except torch.cuda.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            raise

    def close(self) -> None:
        self.accelerator.free_memory()  # drops its references to the model and optimizer
        self.model = self.optimizer = self.reference = None
        gc.collect()
        release_free_heap()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
