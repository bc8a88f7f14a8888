"""`data:` — where examples come from, how they are rendered, masked and batched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section

Format = Literal["alpaca", "chat", "completion", "prompt_completion", "classification"]


class DataSpec(Section):
    format: Format = Field(..., description="alpaca | chat | completion | prompt_completion | classification")
    path: str = Field(
        ..., description="data file or folder (relative to the recipe), a hub id, or builtin:NAME (peftkit data builtins)"
    )
    eval_path: str | None = Field(None, description="held-out file; otherwise eval_fraction of path is held out")
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="share of path held out when eval_path is unset")
    limit: int | None = Field(None, ge=1, description="use at most this many training examples")
    max_length: int = Field(1024, ge=8, description="tokens per example; longer ones are truncated and counted")
    train_on_inputs: bool = Field(False, description="also train on prompts / user turns (default: responses only)")
    packing: bool = Field(False, description="pack several examples per row, attention kept within each example")
    seed: int | None = Field(None, description="shuffle seed (default: train.seed)")

    @model_validator(mode="after")
    def _eval_source(self):
        if self.eval_path is None and self.eval_fraction == 0.0 and not self.path.startswith("builtin:"):
            raise ValueError("needs eval_path or eval_fraction > 0 to measure eval loss")
        return self
