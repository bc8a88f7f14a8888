"""The recipe: one frozen, typed tree of sections. Field descriptions here feed the CLI help and docs."""

from __future__ import annotations

import re

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._base import Section
from .adapter import PROMPT_LEARNING, AdapterSpec, compatibility_problems
from .data import DataSpec, task_format_problem
from .eval import EvalSpec
from .model import ModelSpec, QuantizationSpec
from .output import OutputSpec
from .train import TrainSpec


class Recipe(Section):
    name: str = Field(..., description="run name; default run directory is runs/<name>")
    description: str = Field("", description="free text, copied into the run directory")
    model: ModelSpec
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' or '-' (it names a directory)")
        return v

    def packs(self, checkpointing: bool) -> bool:
        """data.packing resolved for a run with or without activation checkpointing. `auto` packs causal LM
        batches when checkpointing is on, unless PEFT's prompt learning would drop the position ids that keep
        packed examples apart. Measured on SmolLM2 4-bit, 2 CPU cores (benchmarks/results/levers.md): with
        checkpointing, packed rows (sdpa) stepped 1.17x faster than padded batches and peaked lower; without it,
        padded batches (eager) were faster (23.5 vs 26.9 s on Code Alpaca): a packed row's block-diagonal
        attention costs more on CPU than the padding it saves, unless the activations are recomputed anyway."""
        if self.data.packing != "auto":
            return self.data.packing
        return (checkpointing and self.model.task == "causal_lm" and self.data.format != "classification"
                and self.adapter.method not in PROMPT_LEARNING)

    @model_validator(mode="after")
    def _adapter_fits_model_data_train(self):
        # raised as a ValidationError so each problem keeps its own dotted key (adapter.method, adapter.init, ...)
        problems = compatibility_problems(self.adapter, self.model, self.data, self.train)
        fits = task_format_problem(self.model.task, self.data.format)
        if fits:
            problems = [("data.format", fits, self.data.format), *problems]
        if problems:
            raise ValidationError.from_exception_data("Recipe", [
                InitErrorDetails(type=PydanticCustomError("incompatible", "{message}", {"message": message}),
                                 loc=tuple(key.split(".")), input=value)
                for key, message, value in problems
            ])
        return self


__all__ = [
    "AdapterSpec", "DataSpec", "EvalSpec", "ModelSpec", "OutputSpec", "QuantizationSpec", "Recipe", "Section", "TrainSpec",
]
