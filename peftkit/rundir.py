"""The run directory: what training writes, and what eval/merge/export read back.

runs/<name>/
  adapter/        PEFT adapter (adapter_config.json, adapter_model.safetensors) + tokenizer
  recipe.yaml     the resolved recipe, every default filled in
  meta.json       package versions, base model id + weight fingerprint, quantization, device
  metrics.json    train loss curve, eval before/after, tokens/s, wall time, peak memory
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import RunDirError
from .recipe import Recipe, recipe_from_dict

RUN_FILES = ("adapter/adapter_config.json", "recipe.yaml", "meta.json")
PACKAGES = ("peftkit", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "safetensors")


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.output.dir) if recipe.output.dir else Path("runs") / recipe.name


def prepare_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the run directory; refuse a non-empty one unless told, so a finished run is never clobbered."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output.dir {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"output.dir {path}: not empty (an earlier run?); use --force / output.overwrite=true or another output.dir"
            )
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"output.dir {path}: not writable ({exc.strerror})") from None
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class RunInfo:
    """A finished run, as later commands see it."""

    path: Path
    recipe: Recipe
    meta: dict
    metrics: dict

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"


def read_run(path: str | Path) -> RunInfo:
    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"{root}: run directory not found")
    missing = [f for f in RUN_FILES if not (root / f).is_file()]
    if missing:
        raise RunDirError(f"{root}: not a complete peftkit run (missing {', '.join(missing)})")
    try:
        raw = yaml.safe_load((root / "recipe.yaml").read_text(encoding="utf-8"))
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        metrics_file = root / "metrics.json"
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{root}: unreadable run files ({exc})") from None
    recipe = recipe_from_dict(raw, source=str(root / "recipe.yaml"))
    return RunInfo(path=root, recipe=recipe, meta=meta, metrics=metrics)
