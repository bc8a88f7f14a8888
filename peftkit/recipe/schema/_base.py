"""The base every recipe section derives from: frozen, typed, unknown keys refused."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # allow_inf_nan=False: no recipe number means inf or NaN (an inf lr or LoRA alpha only shows up as a NaN loss)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
