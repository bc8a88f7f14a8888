"""Turning train.gradient_checkpointing on for a model with its adapter attached: one place for the trainer and
for peftkit.planning's measured steps, so a measurement recomputes exactly as the run will."""

from __future__ import annotations

import torch


def enable_recompute(model: torch.nn.Module, *, offload: bool) -> None:
    """Recompute each layer's activations in the backward (non-reentrant, so frozen inputs still get gradients
    into the adapter); `offload` (train.checkpoint_offload) keeps what is saved in pinned host memory on CUDA."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                          offload=offload and torch.cuda.is_available())
    model.enable_input_require_grads()
