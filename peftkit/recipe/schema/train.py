"""`train:` — the optimisation loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section


class TrainSpec(Section):
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(2e-4, gt=0, le=1.0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip gradients to this norm; null disables")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd"] = Field(
        "adamw", description="adamw (torch, fp32 state); 8-bit / paged variants need CUDA bitsandbytes"
    )
    seed: int = Field(42, description="seeds python, numpy, torch and data order")
    log_every: int = Field(10, ge=1, description="steps between logged loss points")
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory, ~30% slower")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Accelerate autocast; 'no' keeps adapter math fp32 on top of the base dtype"
    )

    @model_validator(mode="after")
    def _warmup_within_run(self):
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        return self
