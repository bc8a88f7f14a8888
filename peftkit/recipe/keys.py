"""Every recipe key with its type, default and description, read from the schema (written once, there)."""

from __future__ import annotations


from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .load import _section_of
from .schema import Recipe


def describe_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_of(field.annotation)
        if section is not None:
            rows += describe_keys(section, key + ".")
            continue
        default = "required" if field.default is PydanticUndefined else repr(field.default)
        ann = field.annotation
        kind = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
        rows.append((key, kind, default, field.description or ""))
    return rows


__all__ = ["describe_keys"]
