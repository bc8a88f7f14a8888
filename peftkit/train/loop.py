"""fit(): accumulate, backward, clip, step, log — in that order, on one screen."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from ..adapters import after_optimizer_step
from ..errors import TrainingAborted
from ..recipe.schema import TrainSpec
from .loss import causal_lm_loss, head_reads_last_hidden_state, supports_selective_logits


@dataclass(frozen=True)
class StepLog:
    step: int
    loss: float
    lr: float
    grad_norm: float | None
    tokens: int          # non-pad tokens seen in this step
    trained_tokens: int  # tokens that carried loss
    elapsed_s: float     # training time so far (excludes eval and saving)


@dataclass
class FitState:
    """What fit() accumulates; checkpoints save it and resume restores it."""

    step: int = 0
    micro_batches: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    train_s: float = 0.0
    skipped: int = 0     # non-finite steps skipped under train.skip_nonfinite
    curve: list[dict] = field(default_factory=list)


def _trained(batch: dict) -> int:
    labels = batch["labels"]
    if labels.dim() == 1:  # classification: one label per row
        return int(labels.numel())
    return int((labels[:, 1:] != -100).sum())  # causal LM shifts labels by one inside the model


def _tokens(batch: dict) -> int:
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int(mask.sum())
    return int(batch["input_ids"].numel())


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterator[tuple[int, dict]],
    accelerator: Accelerator,
    spec: TrainSpec,
    state: FitState,
    *,
    on_step: Callable[[StepLog], None] = lambda log: None,
    checkpoint: Callable[[FitState], None] = lambda state: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> FitState:
    params = [p for p in model.parameters() if p.requires_grad]
    selective = spec.selective_logits and supports_selective_logits(accelerator.unwrap_model(model))
    chunk = spec.logits_chunk if selective and spec.logits_chunk and head_reads_last_hidden_state(model) else None
    model.train()
    while state.step < spec.max_steps and not should_stop():
        t0 = time.perf_counter()
        micro = [next(batches)[1] for _ in range(spec.grad_accum)]
        causal = micro[0]["labels"].dim() == 2
        # Token-weighted loss over the whole accumulation window (and all processes), not a mean of means.
        n_local = sum(_trained(b) for b in micro)
        n_items = accelerator.reduce(torch.tensor(n_local, device=accelerator.device), "sum").item()
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            with accelerator.no_sync(model) if i < len(micro) - 1 else nullcontext():
                if causal:
                    loss = causal_lm_loss(model, batch, max(n_items, 1), selective=selective, chunk=chunk)
                    loss = loss * accelerator.num_processes  # DDP averages gradients over processes
                else:
                    out = model(**batch)
                    loss = out.loss * _trained(batch) / max(n_local, 1)
                accelerator.backward(loss)
                loss_sum += loss.detach().float().item() / accelerator.num_processes
        grad_norm = float(accelerator.clip_grad_norm_(params, spec.max_grad_norm or math.inf))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            state.micro_batches += spec.grad_accum  # the bad batch is passed over, also after a resume
            if state.skipped >= spec.skip_nonfinite:
                raise TrainingAborted(
                    f"train: non-finite loss/gradient ({loss_sum}/{grad_norm}) at step {state.step + 1}; "
                    "lower train.lr, check the data, or allow train.skip_nonfinite"
                )
            state.skipped += 1
            continue
        optimizer.step()
        after_optimizer_step(accelerator.unwrap_model(model), state.step + 1)  # AdaLoRA's rank budget; no-op else
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.micro_batches += spec.grad_accum
        state.tokens += sum(_tokens(b) for b in micro)
        state.trained_tokens += n_local
        state.train_s += time.perf_counter() - t0
        log = StepLog(state.step, loss_sum, lr, grad_norm, state.tokens, state.trained_tokens, state.train_s)
        if state.step % spec.log_every == 0 or state.step in (1, spec.max_steps):
            state.curve.append({"step": log.step, "loss": round(log.loss, 6), "lr": lr, "elapsed_s": round(log.elapsed_s, 3)})
        on_step(log)
        if spec.checkpoint_every and (state.step % spec.checkpoint_every == 0 or state.step == spec.max_steps):
            checkpoint(state)
    return state
