"""`adapter:` — the PEFT method trained on top of the frozen base."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ._base import Section

TargetPreset = Literal["all-linear", "attention", "mlp"]


class AdapterSpec(Section):
    method: Literal["lora"] = Field("lora", description="PEFT method")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r: higher learns more and costs memory")
    alpha: float = Field(32.0, gt=0, description="LoRA scale numerator (scale = alpha / rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the adapter input")
    targets: TargetPreset | tuple[str, ...] = Field(
        "all-linear", description="all-linear, attention, mlp, or a list of module names"
    )
    modules_to_save: tuple[str, ...] = Field((), description="extra modules trained in full and saved (e.g. score)")

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, tuple) and not v:
            raise ValueError("needs at least one module name, or a preset: all-linear, attention, mlp")
        return v
