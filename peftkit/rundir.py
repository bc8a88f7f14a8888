"""The run directory: what training writes, and what eval/merge/export read back. Its files are typed here
(pydantic models with a format version) and read and written only through this module; every write is staged
and renamed into place, so a reader never sees half a file or half a folder.

runs/<name>/
  adapter/        PEFT adapter (adapter_config.json, adapter_model.safetensors) + tokenizer
  recipe.yaml     the resolved recipe: every default filled in, every `auto` as chosen on the machine that trained
  meta.json       Meta: package versions, base id + weight fingerprint, quantization, precision, hardware, data report
  metrics.json    Metrics: train loss curve (with each step's token counts), tokens/s, wall time, peak memory, eval
  eval.json       EvalRecord: base vs adapter (vs merged) on the held-out rows (`peftkit eval`, peftkit.evaluate)
  curve.jsonl     one line per logged step as training goes (metrics.json's curve + grad norm, tokens/s, memory)
  report.html     `peftkit report`: the run's plots, eval, data and choices in one page (written by `peftkit train`)
  logs/           train.report_to tensorboard: TensorBoard event files
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from .errors import RunDirError
from .recipe import Recipe, recipe_from_dict

FORMAT_VERSION = 1  # of meta.json / metrics.json / eval.json; raise it when a field changes meaning


class _Record(BaseModel):
    # unknown keys are kept (a newer peftkit may add some); a missing required one is an unreadable run
    model_config = ConfigDict(extra="allow", frozen=True)
    version: int = FORMAT_VERSION


class BaseInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    resolved: str
    kind: str
    fingerprint: str | None = None


class Meta(_Record):
    peftkit_command: str = ""
    versions: dict[str, str | None] = {}
    base: BaseInfo
    quantization: dict[str, Any] = {}
    trust_remote_code: bool = False
    device: str = "cpu"
    num_processes: int = 1
    distributed: str = "NO"
    hardware: dict[str, Any] = {}
    precision: dict[str, Any] = {}  # peftkit.hardware.Precision.to_dict(): value, source and why of each setting
    data: dict[str, Any] = {}       # peftkit.data.DataReport.to_dict()
    params: dict[str, int] = {}
    gradient_checkpointing: dict[str, Any] = {}
    packing: bool = False
    objective: str = "sft"
    reference: dict[str, Any] = {}  # preference runs: mode (adapter_off | precomputed | none), the model, why
    init_from: str | None = None    # adapter.init_from: the run whose adapter this one started from
    batch_size: dict[str, Any] = {}  # train.batch_size auto: the batch chosen, the memory cap, each candidate measured
    privacy: dict[str, Any] = {}  # train.privacy: peftkit.privacy.PrivacyPlan (noise, sampling rate, delta, ...)


class TrainMetrics(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    steps: int
    final_loss: float | None
    loss_curve: list[dict[str, Any]]  # step, loss, lr, elapsed_s, tokens, trained_tokens (that step's)
    tokens: int
    trained_tokens: int  # peftkit.modeling.tokens.trained_tokens over every step's batches, all processes
    tokens_per_s: float
    trained_tokens_per_s: float
    train_s: float
    wall_s: float
    eval_share: float
    peak_memory_mb: float  # the largest of the phases below
    peak_memory: dict[str, Any] = {}  # kind, load_mb, eval_before_mb, train_mb, eval_after_mb
    skipped_nonfinite: int = 0
    fp16_overflow_steps: int = 0
    privacy: dict[str, Any] = {}  # train.privacy: the plan, and the epsilon spent (Opacus's accountant) at the end


class EvalMetrics(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    before: dict[str, float] | None = None
    after: dict[str, float]
    examples: int
    samples_after: list[dict[str, Any]] = []


class Metrics(_Record):
    train: TrainMetrics
    eval: EvalMetrics


class ModelScore(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    kind: str  # base | adapter | merged
    metrics: dict[str, float]
    seconds: float
    predictions: tuple[str, ...] = ()


class EvalRecord(_Record):
    recipe: str
    examples: int
    rows: tuple[ModelScore, ...]
    samples: tuple[dict[str, Any], ...] = ()  # prompt, reference, and each model's prediction

    def metric_names(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r.metrics))

    def to_markdown(self) -> str:
        names = self.metric_names()
        lines = [f"# eval: {self.recipe} ({self.examples} held-out examples)", "",
                 "| model | kind | " + " | ".join(names) + " | seconds |",
                 "| --- | --- | " + " | ".join("---:" for _ in names) + " | ---: |"]
        for r in self.rows:
            vals = " | ".join(f"{r.metrics[n]:.4f}" if n in r.metrics else "" for n in names)
            lines.append(f"| {r.name} | {r.kind} | {vals} | {r.seconds:.1f} |")
        for i, s in enumerate(self.samples, 1):
            lines += ["", f"## sample {i}", "", "reference: `" + s["reference"].replace("`", "'") + "`", ""]
            lines += [f"- {name}: `" + pred.replace("`", "'") + "`" for name, pred in s["predictions"].items()]
        return "\n".join(lines) + "\n"


RUN_FILES = ("adapter/adapter_config.json", "recipe.yaml", "meta.json")
PACKAGES = ("peftkit", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "safetensors")


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.output.dir) if recipe.output.dir else Path("runs") / recipe.name


def refuse_non_empty(path: Path, *, overwrite: bool) -> bool:
    """The one rule that keeps a finished run from being clobbered: a non-empty run directory is refused unless
    the user said --force / output.overwrite. Returns whether there is something to replace."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output.dir {path}: exists and is not a directory")
    if not (path.is_dir() and any(path.iterdir())):
        return False
    if not overwrite:
        raise RunDirError(
            f"output.dir {path}: not empty (an earlier run?); use --force / output.overwrite=true or another output.dir"
        )
    return True


def prepare_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the run directory (refuse_non_empty first)."""
    if refuse_non_empty(path, overwrite=overwrite):
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


def write_record(path: Path, record: _Record) -> None:
    """meta.json / metrics.json / eval.json, from their models only."""
    write_json(path, record.model_dump(mode="json"))


def read_record(path: Path, kind: type[_Record]) -> _Record:
    try:
        return kind.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError: a field missing or of the wrong type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: unreadable ({first})") from None


CURVE_FILE = "curve.jsonl"


def append_curve(root: Path, row: dict) -> None:
    """One logged step, appended and flushed as training goes (the live dashboard reads it while a run trains)."""
    with (root / CURVE_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_curve(root: Path) -> list[dict]:
    """curve.jsonl's rows by step; a line cut short by a write in progress is skipped, and a step logged again
    after a resume keeps its newest row."""
    try:
        lines = (root / CURVE_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows: dict[int, dict] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def read_meta(root: Path) -> Meta | None:
    """The run's meta.json, or None where it has none yet (a run directory being created)."""
    return read_record(root / "meta.json", Meta) if (root / "meta.json").is_file() else None


@contextmanager
def staged(target: Path, *, force: bool) -> Iterator[Path]:
    """A fresh hidden folder beside `target`, renamed to `target` when the block completes, removed if not."""
    target = Path(target)
    if target.exists() and not force:
        raise RunDirError(f"{target}: already exists; use --force to replace it, or --out elsewhere")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        yield tmp
        publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, target: Path) -> None:
    """Rename a finished folder into place; an existing target is first moved aside, then removed, so at every
    moment `target` is either the old folder or the new one."""
    _usual_permissions(tmp)
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-")) / "x"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def _usual_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the published ones what a plain open() would (umask)."""
    probe = folder / ".mode-probe"
    probe.touch()
    file_mode = probe.stat().st_mode & 0o777
    probe.unlink()
    dir_mode = file_mode | ((file_mode & 0o444) >> 2)  # r -> x: rw-r--r-- becomes rwxr-xr-x
    folder.chmod(dir_mode | 0o700)
    for path in folder.rglob("*"):
        path.chmod(dir_mode | 0o700 if path.is_dir() else file_mode)


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
    meta: Meta
    metrics: Metrics | None  # None for a run stopped before its end

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
    except yaml.YAMLError as exc:
        raise RunDirError(f"{root}: unreadable run files ({exc})") from None
    recipe = recipe_from_dict(raw, source=str(root / "recipe.yaml"))
    metrics_file = root / "metrics.json"
    metrics = read_record(metrics_file, Metrics) if metrics_file.is_file() else None
    return RunInfo(path=root, recipe=recipe, meta=read_meta(root), metrics=metrics)
