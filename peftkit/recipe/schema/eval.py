"""`eval:` — what is measured before and after training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Section

Metric = Literal["loss", "perplexity", "exact_match", "accuracy", "f1", "precision", "recall", "rouge_l", "numeric_match"]


class EvalSpec(Section):
    metrics: tuple[Metric, ...] = Field(("loss",), description="metrics computed before and after training")
    max_examples: int | None = Field(None, ge=1, description="cap on held-out examples scored (null: all)")
    batch_size: int | None = Field(None, ge=1, description="eval batch size (default: train.batch_size)")
    max_new_tokens: int = Field(64, ge=1, description="generation length for exact_match / rouge_l / numeric_match")
    before: bool = Field(True, description="also score the base model before training")
