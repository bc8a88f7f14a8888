"""`output:` — where the run directory goes."""

from __future__ import annotations

from pydantic import Field

from ._base import Section


class OutputSpec(Section):
    dir: str | None = Field(None, description="run directory (default runs/<recipe name>), relative to the working directory")
    overwrite: bool = Field(False, description="replace a non-empty run directory")
