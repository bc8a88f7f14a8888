"""The reference model of dpo/ipo/kto, without a second copy of the weights.

The reference is the model training starts from. When that is the bare base (a fresh adapter whose start
changes nothing, e.g. LoRA's B = 0), it is the policy with the adapter switched off, scored on the fly. When it is
not (adapter.init_from: an SFT run's adapter; pissa/olora/loftq starts), switching the adapter off would give the
bare base instead (a known trap), so the reference log-probs of every answer training and eval will use are
computed once before the first step and kept in the run directory (REFERENCE_FILE), which resume reads back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from safetensors.torch import load_file, save_file

from ..errors import RunDirError
from ..modeling.logps import sequence_logps
from ..modeling.loss import head_reads_last_hidden_state, supports_selective_logits
from ..modeling.objective import REFERENCE_FILE, ModelReference, Precomputed
from ..recipe import Recipe
from ..recipe.schema.train import REFERENCE_OBJECTIVES
from .batches import Batches

PRECOMPUTE_CHUNK = 256  # trained positions projected to the vocabulary at a time
PROBE_TOLERANCE = 1e-4  # nats per answer: fp32 noise between two identical forwards is far below it


@dataclass(frozen=True)
class ReferenceChoice:
    mode: str   # "adapter_off" | "precomputed" | "none"
    model: str  # what the reference is
    why: str

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.mode == "none":
            return f"reference: none ({self.why})"
        how = "precomputed once" if self.mode == "precomputed" else "adapter switched off, on the fly"
        return f"reference: {self.model}, {how} ({self.why})"


@torch.no_grad()
def _probe_differs(model, batch: dict) -> bool:
    """Whether the adapter as initialised already changes the answers' log-probs (then it is not the base)."""
    was_training = model.training
    model.eval()
    try:
        selective = supports_selective_logits(model)
        on = sequence_logps(model, batch, selective=selective)[0]
        with model.disable_adapter():
            off = sequence_logps(model, batch, selective=selective)[0]
    finally:
        model.train(was_training)
    return bool((on - off).abs().max() > PROBE_TOLERANCE)


def choose_reference(recipe: Recipe, model, probe_batch: dict) -> ReferenceChoice:
    t, init_from = recipe.train, recipe.adapter.init_from
    if t.objective not in REFERENCE_OBJECTIVES:
        return ReferenceChoice("none", "", f"objective {t.objective} is reference-free")
    start = f"the {init_from} adapter (adapter.init_from)" if init_from else "the base"
    if t.precompute_ref is True:
        return ReferenceChoice("precomputed", start if init_from else "the model at step 0", "train.precompute_ref")
    if t.precompute_ref is False:
        why = "train.precompute_ref false" + (": the reference is the bare base, not the init_from adapter"
                                             if init_from else "")
        return ReferenceChoice("adapter_off", "the base", why)
    if init_from:
        return ReferenceChoice("precomputed", start, "auto: training starts from a trained adapter, which "
                               "switching the adapter off would drop")
    if _probe_differs(model, probe_batch):
        return ReferenceChoice("precomputed", "the model at step 0", f"auto: adapter.init {recipe.adapter.init} / "
                               f"{recipe.adapter.method} does not start as the base")
    return ReferenceChoice("adapter_off", "the base", "auto: the adapter starts as the bare base")


def rows_used(n: int, recipe: Recipe, world: int) -> list[int]:
    """The training rows the run's micro-batches will read, skipped non-finite steps' extra batches included."""
    t = recipe.train
    sampler = Batches(n, t.batch_size, t.seed)
    count = (t.max_steps + t.skip_nonfinite) * t.grad_accum * world
    if count >= sampler.per_epoch:
        return list(range(n))
    return sorted({i for k in range(count) for i in sampler.batch(k)})


@torch.no_grad()
def score_answers(model, rows: list[dict], collate: Callable, batch_size: int, device,
                  answers: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob sums of every answer of `rows` (and of their KTO mismatches) under `model` as it is now, in
    tables indexed by answer_index; answers not scored stay NaN so a lookup of one fails loudly."""
    logps = torch.full((answers,), float("nan"))
    kl = None
    selective = supports_selective_logits(model)
    chunk = PRECOMPUTE_CHUNK if selective and head_reads_last_hidden_state(model) else None
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(rows), batch_size):
            batch = send_to_device(collate(rows[i : i + batch_size]), device)
            index = batch["answer_index"].cpu()
            logps[index] = sequence_logps(model, batch, chunk=chunk, selective=selective)[0].float().cpu()
            if "kl_input_ids" in batch:
                kl = kl if kl is not None else torch.full((answers,), float("nan"))
                kl[index] = sequence_logps(model, batch, prefix="kl_", chunk=chunk, selective=selective)[0].float().cpu()
    finally:
        model.train(was_training)
    return logps, kl


def answers_in(rows: list[dict]) -> int:
    return 2 * len(rows) if rows and "chosen" in rows[0] else len(rows)


def build_references(choice: ReferenceChoice, model, *, train_rows: list[dict], eval_rows: list[dict],
                     recipe: Recipe, collate: Callable, batch_size: int, device, world: int, run_dir: Path,
                     resumed: bool, main: bool) -> tuple[object | None, object | None]:
    """(train reference, eval reference) for fit() and measure(). Precomputed tables are written by the main
    process to the run directory, and read back from it on resume (the model has moved since step 0)."""
    if choice.mode == "none":
        return None, None
    if choice.mode == "adapter_off":
        selective = supports_selective_logits(model)
        # one chunk of vocabulary logits alive at a time, as in the policy's own forward
        chunk = recipe.train.logits_chunk if selective and head_reads_last_hidden_state(model) else None
        ref = ModelReference(model, chunk=chunk, selective=selective, adapter_off=True)
        return ref, ref
    path = run_dir / REFERENCE_FILE
    if resumed:
        if not path.is_file():
            raise RunDirError(f"{path}: missing; the run's reference log-probs were computed at step 0 and cannot "
                              "be recomputed after it (start the run again)")
        tables = load_file(str(path))
    else:
        used = [train_rows[i] for i in rows_used(len(train_rows), recipe, world)]
        tables = {}
        scored_eval = eval_rows[: recipe.eval.max_examples] if recipe.eval.max_examples else eval_rows
        for split, rows in (("train", used), ("eval", scored_eval)):
            n = answers_in(train_rows if split == "train" else eval_rows)
            logps, kl = score_answers(model, rows, collate, batch_size, device, n)
            tables[f"{split}_logps"] = logps
            if kl is not None:
                tables[f"{split}_kl_logps"] = kl
        if main:
            partial = path.with_suffix(".partial")
            save_file(tables, str(partial), metadata={"objective": recipe.train.objective, "reference": choice.model})
            os.replace(partial, path)
    return (Precomputed(tables["train_logps"], tables.get("train_kl_logps")),
            Precomputed(tables["eval_logps"], tables.get("eval_kl_logps")))
