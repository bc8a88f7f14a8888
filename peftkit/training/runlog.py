"""What a run shows while it trains: each logged step appended to RUN/curve.jsonl (always; `peftkit report` and
`peftkit ui` read it) and, with train.report_to, sent to TensorBoard / Trackio / W&B / MLflow through Accelerate's
trackers, with eval before / after and the resolved recipe as hyper-parameters. Files: main process only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from ..errors import PeftkitError
from ..hardware import peak_memory_mb
from ..recipe import Recipe
from ..rundir import append_curve
from .loop import StepLog

LOGS_DIR = "logs"  # under the run directory: TensorBoard's event files (logs/<recipe name>/events.out.tfevents.*)


def check_report_to(report_to: tuple[str, ...]) -> None:
    """A tracker whose package is missing is one line naming the extra (Accelerate would silently drop it)."""
    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise PeftkitError("train.report_to: " + "; ".join(
            f"{name} is not installed (pip install 'peftkit[{name}]')" for name in missing))


def tracker_config(recipe: Recipe, run_dir: Path) -> dict:
    """Accelerator(...) arguments for the recipe's trackers; none without train.report_to."""
    if not recipe.train.report_to:
        return {}
    return {"log_with": list(recipe.train.report_to),
            "project_config": ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / LOGS_DIR))}


def hyperparameters(recipe: Recipe) -> dict[str, str | int | float | bool]:
    """The resolved recipe as flat dotted keys with scalar values (what every tracker's hparams accept)."""
    flat: dict[str, str | int | float | bool] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:  # None, lists
            flat[prefix] = json.dumps(value)

    walk("", recipe.model_dump(mode="json"))
    return flat


class RunLog:
    def __init__(self, accelerator: Accelerator, recipe: Recipe, run_dir: Path, *, main: bool):
        self.accelerator, self.run_dir, self.main = accelerator, run_dir, main
        self.trackers = bool(recipe.train.report_to)
        self._last: tuple[int, float] | None = None  # (tokens, elapsed_s) at the previous logged step
        if self.trackers:
            name, hparams = run_dir.name, hyperparameters(recipe)
            # trackio keeps a run's config only when given to trackio.init (Accelerate updates it after)
            accelerator.init_trackers(recipe.name, config=hparams, init_kwargs={
                "trackio": {"name": name, "config": hparams}, "wandb": {"name": name}, "mlflow": {"run_name": name}})

    def step(self, log: StepLog, row: dict) -> None:
        """`row`: the loss curve's row for this step. Adds tokens/s since the previous logged step, the totals so
        far and the peak memory so far in this phase (peftkit.hardware.peak_memory_mb)."""
        tokens, elapsed = self._last or (0, 0.0)
        self._last = (log.tokens, log.elapsed_s)
        full = {**row, "tokens_per_s": round((log.tokens - tokens) / max(log.elapsed_s - elapsed, 1e-9), 2),
                "total_tokens": log.tokens, "total_trained_tokens": log.trained_tokens,
                "memory_mb": round(peak_memory_mb()[0], 1)}
        if self.main:
            append_curve(self.run_dir, full)
        if self.trackers:
            self.accelerator.log({f"train/{k}": v for k, v in full.items()
                                  if k != "step" and isinstance(v, (int, float))}, step=log.step)

    def eval(self, label: str, metrics: dict[str, float], step: int) -> None:
        if self.trackers:
            self.accelerator.log({f"eval_{label}/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.trackers:
            self.accelerator.end_training()
            self.trackers = False
