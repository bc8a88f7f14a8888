"""YAML + `a.b=value` overrides -> a validated, frozen Recipe. Every problem is reported at once."""

from __future__ import annotations

import copy
import difflib
import reprlib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import PeftkitError, Problem, RecipeError
from .schema import Recipe

# Keys that hold filesystem paths (and data.mix[*].path); relative values are resolved against the recipe's
# folder, so the resolved recipe written into a run directory works from anywhere.
PATH_KEYS = (("data", "path"), ("data", "eval_path"), ("adapter", "init_from"))
MAX_DEPTH = 32  # deeper YAML is refused before deepcopy and pydantic recurse into it


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file, apply overrides, validate. Raises RecipeError / PeftkitError with one line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8") if file.is_file() else None
    except (OSError, ValueError) as exc:  # unreadable, name too long, NUL in the name, not UTF-8
        why = "not a text file" if isinstance(exc, UnicodeDecodeError) else f"cannot read ({exc})"
        raise PeftkitError(f"{file}: {why}") from None
    if text is None:
        raise PeftkitError(f"{file}: recipe file not found")
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise PeftkitError(f"{file}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # PyYAML's int() past Python's 4300-digit limit, a date like 2024-02-30
        raise PeftkitError(f"{file}: not valid YAML: {_one_line(str(exc).split(';')[0])}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PeftkitError(f"{file}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(str(file), [Problem("<top level>", "a recipe is a mapping of sections", raw, True)])
    return recipe_from_dict(raw, overrides=overrides, source=str(file), base_dir=file.parent)


def recipe_from_dict(
    raw: dict, *, overrides: list[str] | tuple[str, ...] = (), source: str | None = None, base_dir: Path | None = None
) -> Recipe:
    if _depth(raw) > MAX_DEPTH:
        raise RecipeError(source, [Problem("<top level>", f"nested more than {MAX_DEPTH} levels deep")])
    data = copy.deepcopy(raw)
    problems = [p for item in overrides for p in _apply_override(data, item)]
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc)
        recipe = None
    if problems:
        raise RecipeError(source, problems)
    return recipe


def _depth(value, level: int = 0, seen: set[int] | None = None) -> int:
    """Nesting depth as deepcopy walks it: each shared node (YAML alias) once, stopping past MAX_DEPTH, so
    cycles and alias bombs end quickly."""
    seen = set() if seen is None else seen
    if level > MAX_DEPTH or not isinstance(value, (dict, list)) or id(value) in seen:
        return level
    seen.add(id(value))
    children = value.values() if isinstance(value, dict) else value
    return max((_depth(c, level + 1, seen) for c in children), default=level + 1)


def _one_line(text: str) -> str:
    """Keys and texts the user typed may hold newlines or other control characters; errors stay one line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError("overrides look like section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = text  # a value that is not YAML is taken as a plain string; the schema judges it
    return key.strip().split("."), value


def _apply_override(data: dict, item: str) -> list[Problem]:
    try:
        parts, value = parse_override(item)
    except ValueError as exc:
        return [Problem(_one_line(item), str(exc))]
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = _one_line(".".join(parts[: i + 1]))
            return [Problem(where, "is a value, not a section; cannot set a key inside it", _shown(child), True)]
        node = child
    node[parts[-1]] = value
    return []


def _resolve_paths(data: dict, base_dir: Path) -> None:
    nodes = [(data.get(section), key) for section, key in PATH_KEYS]
    mix = data.get("data", {}).get("mix") if isinstance(data.get("data"), dict) else None
    nodes += [(item, "path") for item in mix] if isinstance(mix, list) else []
    for node, key in nodes:
        if not isinstance(node, dict) or not isinstance(node.get(key), str):
            continue
        value = node[key]
        if value.startswith("builtin:") or Path(value).is_absolute():
            continue
        candidate = base_dir / value
        # A hub id ("org/name") that is not a local path stays as it is.
        try:
            if candidate.exists() or value.startswith(".") or Path(value).suffix:
                node[key] = str(candidate.resolve())
        except (OSError, ValueError):  # NUL byte, name too long: left as written, the schema or data layer says why
            continue


def _problems(exc: ValidationError) -> list[Problem]:
    merged: dict[str, Problem] = {}
    for err in exc.errors():
        key, model = _dotted_key(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            problem = Problem(key, "unknown key" + _did_you_mean(key, model))
        elif kind == "missing":
            problem = Problem(key, "required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            # a rule across a section's fields names the section; echoing the whole section is noise
            problem = Problem(key, _one_line(msg), _shown(value), not isinstance(value, dict))
        if key in merged and kind != "extra_forbidden":
            old = merged[key]  # a union reports once per member: join them
            problem = Problem(key, f"{old.message}, or {problem.message.lower()}", old.value, old.has_value)
        merged[key] = problem
    return list(merged.values())


def _dotted_key(loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """Keep only real field names and list indices (pydantic adds union-member tags to loc)."""
    parts: list[str] = []
    model: type[BaseModel] | None = Recipe
    parent = Recipe
    for item in loc:
        if not isinstance(item, str):
            parts.append(_one_line(str(item)))  # a list index, or a YAML key that is not text (1, null, true)
            continue
        if model is not None and item in model.model_fields:
            parts.append(item)
            parent = model
            model = _section_of(model.model_fields[item].annotation)
        elif model is not None and parent is not None:
            parts.append(_one_line(item))  # an unknown key: named as the user wrote it
            parent, model = model, None
    return ".".join(parts) or "<top level>", parent


def _shown(value):
    return _Brief(value) if isinstance(value, list) else value


class _Brief:
    """A list value shown in an error: bounded, since YAML aliases can make a small file expand exponentially."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        short = reprlib.Repr()  # Python 3.11's Repr takes no arguments
        short.maxlevel, short.maxlist, short.maxstring, short.maxother = 3, 8, 60, 60
        return short.repr(self.value)


def _section_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    *prefix, last = key.split(".")
    close = difflib.get_close_matches(last, list(model.model_fields), n=1, cutoff=0.6)
    if not close:
        return f" (valid keys: {', '.join(model.model_fields)})"
    return f" (did you mean {'.'.join([*prefix, close[0]])}?)"


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe, every default filled in, as written into a run directory."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
