"""train.gradient_checkpointing: auto — recompute activations only where keeping them would crowd the machine.

Checkpointing trades time for memory. On SmolLM2-135M 4-bit, LoRA r=16 all-linear, Code Alpaca, batch 8, 2 CPU
cores (benchmarks/results/levers.md) it cut peak RSS from 7.6 to 2.4 GB and made steps 1.56x slower. The
per-token constant below is from an earlier run of benchmarks/levers.py, not the recorded table: without
checkpointing a step kept ~136 bytes of activations per token, layer and hidden unit (8.6 vs 3.3 GB on a first
batch of 2,264 padded tokens). So `auto` estimates the activations of the largest micro-batch the recipe allows
(train.batch_size x data.max_length tokens) and turns checkpointing on when they would take more than a quarter
of the device's memory (the GPU's, or the machine's RAM on CPU), leaving the rest for the weights, the optimizer,
the logits and everything else running there. The decision and its numbers are printed and kept in meta.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# Activations kept per token x layer x hidden unit without checkpointing (measured, see above): fp32 adapter
# inputs (PEFT casts x to the adapter's dtype in each of the 7 adapted projections), dropout copies, the MLP's
# 2.7x-wide intermediates and attention. An estimate for choosing, not an allocator.
BYTES_PER_HIDDEN = 136
BUDGET_SHARE = 0.25


@dataclass(frozen=True)
class CheckpointingChoice:
    enabled: bool
    why: str
    estimate_bytes: int | None = None
    budget_bytes: int | None = None


def device_memory_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_estimate(tokens: int, config) -> int | None:
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if not layers or not hidden:
        return None
    return tokens * layers * hidden * BYTES_PER_HIDDEN


def choose_checkpointing(setting: bool | str, *, batch_size: int, max_length: int, config,
                         device_bytes: int | None = None) -> CheckpointingChoice:
    if setting != "auto":
        return CheckpointingChoice(bool(setting), "set in the recipe")
    tokens = batch_size * max_length
    estimate = activation_estimate(tokens, config)
    if estimate is None:
        return CheckpointingChoice(True, "auto: the model config gives no layer count / hidden size to estimate from")
    budget = int(BUDGET_SHARE * (device_bytes or device_memory_bytes()))
    on = estimate > budget
    why = (f"auto: activations of a {batch_size} x {max_length}-token batch ~{estimate / 2**30:.1f} GiB "
           f"{'>' if on else '<='} {BUDGET_SHARE:.0%} of device memory ({budget / 2**30:.1f} GiB)")
    return CheckpointingChoice(on, why, estimate, budget)
