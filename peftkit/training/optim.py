"""Optimizer and learning-rate schedule from the train section. Optimizer state stays fp32."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from ..errors import Problem, RecipeError
from ..recipe.schema import TrainSpec

CUDA_ONLY = ("adamw_8bit", "paged_adamw_8bit")


def build_optimizer(params: list[torch.nn.Parameter] | list[dict], spec: TrainSpec) -> torch.optim.Optimizer:
    """`params`: the trainable parameters, or parameter groups (peftkit.adapters.param_groups: LoRA+ gives B its
    own lr); a group's lr / weight_decay override spec's, and the schedule scales each group's lr alike."""
    if spec.optimizer in CUDA_ONLY:
        if not torch.cuda.is_available():
            raise RecipeError(None, [Problem(
                "train.optimizer", "bitsandbytes 8-bit/paged optimizers need a CUDA GPU; use adamw on CPU",
                spec.optimizer, True,
            )])
        import bitsandbytes as bnb  # imported only on the CUDA path

        cls = bnb.optim.PagedAdamW8bit if spec.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
        return cls(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    # foreach=True: one fused kernel sweep over all LoRA tensors instead of a Python loop per tensor
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec):
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[spec.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=min(spec.warmup_steps, spec.max_steps), num_training_steps=spec.max_steps)
