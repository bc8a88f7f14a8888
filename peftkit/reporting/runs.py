"""A run directory as the report and the dashboard see it: finished or still training, read through rundir."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import RunDirError
from ..rundir import EvalRecord, Meta, Metrics, read_curve, read_meta, read_record


@dataclass(frozen=True)
class RunView:
    name: str
    path: Path
    curve: tuple[dict, ...]          # curve.jsonl's rows, else metrics.json's loss curve (runs before curve.jsonl)
    meta: Meta | None                 # None before training has written it
    metrics: Metrics | None           # None while training (or stopped before its end)
    eval_record: EvalRecord | None    # `peftkit eval`'s table, when it was run
    recipe: dict = field(default_factory=dict)  # recipe.yaml as written (the resolved recipe)

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def max_steps(self) -> int | None:
        return (self.recipe.get("train") or {}).get("max_steps")

    @property
    def preference(self) -> bool:
        return any("reward_margin" in r for r in self.curve)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("recipe.yaml", "meta.json", "curve.jsonl"))


def find_runs(root: Path) -> list[Path]:
    """Run directories directly under `root` (or `root` itself), newest first."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found = [p for p in root.iterdir() if is_run_dir(p)] if root.is_dir() else []
    return sorted(found, key=lambda p: _mtime(p), reverse=True)


def _mtime(path: Path) -> float:
    return max((path / f).stat().st_mtime for f in ("recipe.yaml", "meta.json", "curve.jsonl", "metrics.json")
               if (path / f).is_file())


def load_run(path: str | Path) -> RunView:
    root = Path(path)
    if not is_run_dir(root):
        raise RunDirError(f"{root}: not a peftkit run directory (no recipe.yaml, meta.json or curve.jsonl)")
    metrics = read_record(root / "metrics.json", Metrics) if (root / "metrics.json").is_file() else None
    curve = read_curve(root)
    if not curve and metrics is not None:
        curve = _with_rates(metrics.train.loss_curve)
    record = read_record(root / "eval.json", EvalRecord) if (root / "eval.json").is_file() else None
    try:
        recipe = yaml.safe_load((root / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        recipe = {}
    return RunView(name=root.name, path=root, curve=tuple(curve), meta=read_meta(root), metrics=metrics,
                   eval_record=record, recipe=recipe if isinstance(recipe, dict) else {})


def _with_rates(curve: list[dict]) -> list[dict]:
    """metrics.json's curve holds each logged step's own tokens and the elapsed time: tokens/s between logged
    steps is the step's tokens over the mean step time since the previous logged step."""
    out, prev = [], (0, 0.0)
    for row in curve:
        steps, seconds = row["step"] - prev[0], row.get("elapsed_s", 0.0) - prev[1]
        rate = row.get("tokens", 0) * steps / seconds if seconds > 0 and steps > 0 else math.nan
        out.append({**row, "tokens_per_s": rate})
        prev = (row["step"], row.get("elapsed_s", 0.0))
    return out
