"""The recipe: one frozen, typed tree of sections. Field descriptions here feed the CLI help and docs."""

from __future__ import annotations

import re

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._base import Section
from .adapter import AdapterSpec, compatibility_problems
from .data import DataSpec, objective_format_problem, task_format_problem
from .eval import EvalSpec
from .model import ModelSpec, QuantizationSpec
from .output import OutputSpec
from .privacy import PrivacySpec, privacy_problems
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

    @model_validator(mode="after")
    def _adapter_fits_model_data_train(self):
        # raised as a ValidationError so each problem keeps its own dotted key (adapter.method, adapter.init, ...)
        problems = compatibility_problems(self.adapter, self.model, self.data, self.train)
        problems += privacy_problems(self.adapter.method, self.data.packing, self.train)
        fits = task_format_problem(self.model.task, self.data.format)
        if fits:
            problems = [("data.format", fits, self.data.format), *problems]
        reads = objective_format_problem(self.train.objective, self.data.format)
        if reads and not fits:
            problems = [("train.objective", reads, self.train.objective), *problems]
        if problems:
            raise ValidationError.from_exception_data("Recipe", [
                InitErrorDetails(type=PydanticCustomError("incompatible", "{message}", {"message": message}),
                                 loc=tuple(key.split(".")), input=value)
                for key, message, value in problems
            ])
        return self


__all__ = [
    "AdapterSpec", "DataSpec", "EvalSpec", "ModelSpec", "OutputSpec", "PrivacySpec", "QuantizationSpec", "Recipe", "Section", "TrainSpec",
]
