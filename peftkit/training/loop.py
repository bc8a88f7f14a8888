"""fit(): accumulate, backward, clip, step, log — in that order, on one screen."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device

from ..adapters import after_optimizer_step
from ..errors import TrainingAborted
from ..modeling.loss import causal_lm_loss, head_reads_last_hidden_state, supports_selective_logits
from ..modeling.objective import Reference, items_in, score
from ..modeling.tokens import trained_tokens
from ..recipe.schema import TrainSpec

if TYPE_CHECKING:  # the private step's type only: opacus loads when a run asks for privacy
    from ..privacy import PrivateSGD


@dataclass(frozen=True)
class StepLog:
    step: int
    loss: float
    lr: float
    grad_norm: float | None
    tokens: int          # non-pad tokens seen in this step
    trained_tokens: int  # tokens that carried loss
    elapsed_s: float     # training time so far (excludes eval and saving)
    stats: dict = field(default_factory=dict)  # preference objectives: this step's mean rewards, margin, accuracies
    epsilon: float | None = None  # train.privacy: the epsilon spent so far (Opacus's accountant)


@dataclass
class FitState:
    """What fit() accumulates; checkpoints save it and resume restores it."""

    step: int = 0
    micro_batches: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    train_s: float = 0.0
    skipped: int = 0     # non-finite steps skipped under train.skip_nonfinite
    overflows: int = 0   # fp16 steps the loss scaler skipped (the scale dropped; routine, not an error)
    overflows_in_a_row: int = 0
    curve: list[dict] = field(default_factory=list)


def _tokens(batch: dict) -> int:
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int(mask.sum())
    return int(batch["input_ids"].numel())


MAX_OVERFLOWS_IN_A_ROW = 64  # a scale halved 64 times is below any real gradient: the gradients are non-finite


def _sum(accelerator: Accelerator, value: float | int) -> float:
    """Sum over processes (a no-op with one); every process gets the same number."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(torch.tensor(float(value), dtype=torch.float64, device=accelerator.device), "sum").item()


def _sum_dict(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    total = accelerator.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64,
                                            device=accelerator.device), "sum")
    return dict(zip(keys, total.tolist()))


def _step_stats(sums: dict[str, float], pairs: float, micro: int) -> dict[str, float]:
    """Per-pair means of summed preference stats; kto's kl is a per-batch value, averaged over micro-batches."""
    out = {k: v / max(pairs, 1) for k, v in sums.items() if k != "kl"}
    if "kl" in sums:
        out["kl"] = sums["kl"] / max(micro, 1)
    return out


def _optimizer_step(optimizer, scaler, loss_sum: float, grad_norm: float, state: FitState, spec: TrainSpec) -> bool:
    """Step, or account for the step not taken: an fp16 overflow (the scaler skips the step and lowers its scale,
    routine) or a non-finite loss/gradient (counted against train.skip_nonfinite). True when the weights moved."""
    if scaler is not None and math.isfinite(loss_sum):
        optimizer.step()  # the scaler skips it when the unscaled gradients hold inf/NaN
        if not optimizer.step_was_skipped:
            state.overflows_in_a_row = 0
            return True
        state.overflows += 1
        state.overflows_in_a_row += 1
        if state.overflows_in_a_row > MAX_OVERFLOWS_IN_A_ROW:
            raise TrainingAborted(f"train: fp16 gradients overflowed {state.overflows_in_a_row} steps in a row at step "
                                  f"{state.step + 1} (scale {scaler.get_scale():.3g}); lower train.lr or use bf16")
        return False
    if math.isfinite(loss_sum) and math.isfinite(grad_norm):
        optimizer.step()
        return True
    if state.skipped >= spec.skip_nonfinite:
        raise TrainingAborted(
            f"train: non-finite loss/gradient ({loss_sum}/{grad_norm}) at step {state.step + 1}; "
            "lower train.lr, check the data, or allow train.skip_nonfinite"
        )
    state.skipped += 1  # the bad batch is passed over, also after a resume
    return False


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterator[dict],
    accelerator: Accelerator,
    spec: TrainSpec,
    state: FitState,
    *,
    on_step: Callable[[StepLog], None] = lambda log: None,
    checkpoint: Callable[[FitState], None] = lambda state: None,
    should_stop: Callable[[], bool] = lambda: False,
    reference: Reference | None = None,
    privacy: PrivateSGD | None = None,
) -> FitState:
    """`reference`: the reference log-probs of train.objective dpo/ipo/kto (peftkit.modeling.objective);
    `privacy`: train.privacy's DP-SGD gradients, in place of the token-weighted window below."""
    params = [p for p in model.parameters() if p.requires_grad]
    selective = spec.selective_logits and supports_selective_logits(accelerator.unwrap_model(model))
    chunk = spec.logits_chunk if selective and spec.logits_chunk and head_reads_last_hidden_state(model) else None
    scaler = accelerator.scaler  # fp16 only: skips steps whose scaled gradients overflowed
    world = accelerator.num_processes
    preference = spec.objective != "sft"
    model.train()
    # a stop asked of any one process (SIGTERM to one rank) stops all of them at the same step
    while state.step < spec.max_steps and not _sum(accelerator, bool(should_stop())):
        t0 = time.perf_counter()
        if privacy is not None:  # DP-SGD (peftkit.privacy): Poisson-sampled rows, per-example clipping, noise
            if privacy.exhausted():  # one more step would spend more than train.privacy.epsilon
                break
            drawn = privacy.gradients(model, state.step)
            loss_sum, grad_norm, sums, pairs, micro = drawn.loss, drawn.grad_norm, {}, 0, ()
            tokens_local, trained_local = drawn.tokens, drawn.trained_tokens
        else:
            micro = [next(batches) for _ in range(spec.grad_accum)]  # counted here, on the host: no device sync
            causal = micro[0]["labels"].dim() == 2
            # Token-weighted loss (preference: pair- or item-weighted) over the whole accumulation window and all
            # processes, not a mean of means.
            trained_local = sum(trained_tokens(b["labels"]) for b in micro)
            tokens_local = sum(_tokens(b) for b in micro)
            n_local = sum(items_in(b) for b in micro) if preference else trained_local
            n_items = max(int(_sum(accelerator, n_local)), 1)
            loss_local, sums, pairs = 0.0, {}, 0
            for i, batch in enumerate(micro):
                n_batch, batch = trained_tokens(batch["labels"]), send_to_device(batch, accelerator.device)
                # gradients are all-reduced once per optimizer step, on the last micro-batch
                with accelerator.no_sync(model) if i < len(micro) - 1 else nullcontext():
                    if preference:
                        scored = score(model, batch, spec, reference, chunk=chunk, selective=selective)
                        loss, pairs = scored.loss / n_items, pairs + scored.pairs
                        sums = {k: sums.get(k, 0.0) + v for k, v in scored.stats.items()}
                    elif causal:
                        loss = causal_lm_loss(model, batch, n_items, selective=selective, chunk=chunk)
                    else:
                        loss = model(**batch).loss * n_batch / n_items
                    accelerator.backward(loss * world)  # DDP averages gradients over processes; we want their sum
                    loss_local += loss.detach().float().item()
            loss_sum = _sum(accelerator, loss_local)
            sums, pairs = _sum_dict(accelerator, sums), _sum(accelerator, pairs)
            grad_norm = float(accelerator.clip_grad_norm_(params, spec.max_grad_norm or math.inf))
        state.micro_batches += spec.grad_accum * world  # global count: the same batches after a resume on any world
        if not _optimizer_step(optimizer, scaler, loss_sum, grad_norm, state, spec):
            optimizer.zero_grad(set_to_none=True)
            continue  # not a step: the scheduler and the step count stay where they were
        after_optimizer_step(accelerator.unwrap_model(model), state.step + 1)  # AdaLoRA's rank budget; no-op else
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()

        state.step += 1
        step_tokens = int(_sum(accelerator, tokens_local))
        state.tokens += step_tokens
        step_trained = int(_sum(accelerator, trained_local))
        state.trained_tokens += step_trained
        state.train_s += time.perf_counter() - t0
        stats = _step_stats(sums, pairs, len(micro) * world) if preference else {}
        epsilon = privacy.epsilon() if privacy is not None else None
        log = StepLog(state.step, loss_sum, lr, grad_norm, state.tokens, state.trained_tokens, state.train_s, stats,
                      epsilon=epsilon)
        if state.step % spec.log_every == 0 or state.step in (1, spec.max_steps):
            state.curve.append({"step": log.step, "loss": round(log.loss, 6), "lr": lr, "elapsed_s": round(log.elapsed_s, 3),
                                "grad_norm": round(grad_norm, 6),  # before clipping
                                "tokens": step_tokens, "trained_tokens": step_trained,  # this step's, all processes
                                **{k: round(v, 6) for k, v in stats.items()},
                                **({"epsilon": round(epsilon, 6)} if epsilon is not None else {})})
        on_step(log)
        if spec.checkpoint_every and (state.step % spec.checkpoint_every == 0 or state.step == spec.max_steps):
            checkpoint(state)
    return state
