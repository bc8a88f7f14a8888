"""Reading rows from what users bring: json, jsonl(.gz), csv/tsv, parquet, txt, a folder, a hub id, builtin:NAME.

Line formats are parsed here rather than through `datasets.load_dataset`, so that a bad line is reported with
its file and line number (datasets raises a pyarrow traceback instead). Parquet, `save_to_disk` folders and hub
ids go through pyarrow / `datasets`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

LINE_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json.gz")
SUFFIXES = (".json", *LINE_SUFFIXES, ".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".txt", ".txt.gz")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Record:
    """One input row and where it came from (row is 1-based: the line for line formats, the element for JSON)."""

    data: dict
    file: str
    row: int


@dataclass
class Loaded:
    records: list[Record] = field(default_factory=list)
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, file: str, row: int | None, why: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 5:
            self.reasons.append(f"{file}{f', row {row}' if row is not None else ''}: {why}")


def load_source(path: str, base_dir: Path, *, skip_bad: bool, whole_text: bool = False) -> Loaded:
    """All rows of a local file/folder or a hub dataset. `whole_text`: a .txt file is one row {"text": ...}
    (continued pre-training) instead of one row per line."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    out = Loaded()
    try:
        is_dir, is_file = p.is_dir(), p.is_file()
    except (OSError, ValueError) as e:  # a name too long for the OS, a NUL byte
        raise DataError(str(p), f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    if is_dir:
        _read_folder(p, out, skip_bad, whole_text)
    elif is_file:
        _read_file(p, out, skip_bad, whole_text)
    elif HUB_ID.fullmatch(path) and not path.lower().endswith(SUFFIXES):  # owner/name, not a missing file
        _read_hub(path, out)
    else:
        raise DataError(str(p), "no such file or folder")
    if not out.records:
        raise DataError(str(p), "no rows" + (f" ({out.skipped} skipped as bad)" if out.skipped else " (empty)"))
    return out


def _read_folder(p: Path, out: Loaded, skip_bad: bool, whole_text: bool) -> None:
    if (p / "dataset_info.json").exists() or (p / "state.json").exists():
        _read_saved_dataset(p, out)
        return
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
    if not files:
        raise DataError(str(p), f"folder has no data files ({', '.join(SUFFIXES)})")
    for f in files:
        _read_file(f, out, skip_bad, whole_text)


def _read_file(p: Path, out: Loaded, skip_bad: bool, whole_text: bool) -> None:
    name, file = p.name.lower(), str(p)
    try:
        if name.endswith(".parquet"):
            _read_parquet(p, out)
        elif name.endswith(LINE_SUFFIXES):
            _read_jsonl(p, out, skip_bad)
        elif name.endswith(".json"):
            _read_json(p, out, skip_bad)
        elif name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
            _read_table(p, out, skip_bad, delimiter="\t" if ".tsv" in name else ",")
        elif name.endswith((".txt", ".txt.gz")):
            _read_text(p, out, skip_bad, whole_text)
        else:
            raise DataError(file, f"unknown file type; use one of {', '.join(SUFFIXES)}")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(file, f"cannot read: {e}") from None


def _open_bytes(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _bad(out: Loaded, skip_bad: bool, file: str, row: int | None, why: str) -> None:
    if not skip_bad:
        raise DataError(file, why, row=row)
    out.skip(file, row, why)


def _add(out: Loaded, skip_bad: bool, file: str, row: int, value) -> None:
    if isinstance(value, dict):
        out.records.append(Record(value, file, row))
    else:
        _bad(out, skip_bad, file, row, f"expected an object, got {type(value).__name__}")


def _read_jsonl(p: Path, out: Loaded, skip_bad: bool) -> None:
    file = str(p)
    with _open_bytes(p) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _bad(out, skip_bad, file, lineno, f"not UTF-8 text ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                _bad(out, skip_bad, file, lineno, f"not valid JSON: {e.msg} (column {e.colno})")
                continue
            _add(out, skip_bad, file, lineno, value)


def _decode_text(raw: bytes, file: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(file, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise DataError(file, "file is empty")
    return text


def _read_json(p: Path, out: Loaded, skip_bad: bool) -> None:
    file = str(p)
    raw = p.read_bytes()
    text = _decode_text(raw, file)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON objects, one per line: JSON Lines named .json
            _read_jsonl(p, out, skip_bad)
            return
        raise DataError(file, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if isinstance(value, dict):  # {"data": [...]} / {"train": [...]}: the single list inside
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(file, "expected a JSON array of rows (or an object holding exactly one array)")
        value = lists[0]
    if not isinstance(value, list):
        raise DataError(file, f"expected a JSON array of rows, got {type(value).__name__}")
    for i, item in enumerate(value, 1):
        _add(out, skip_bad, file, i, item)


def _read_table(p: Path, out: Loaded, skip_bad: bool, delimiter: str) -> None:
    file = str(p)
    with _open_bytes(p) as fb:
        try:
            text = fb.read().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(file, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    # TSV files (GLUE and most exports) are not quoted: a '"' inside a sentence is text, not a quote.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if not header:
        raise DataError(file, "file is empty")
    header = [h.strip() for h in header]
    for values in reader:
        line = reader.line_num  # 1-based line in the file, header is line 1
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            _bad(out, skip_bad, file, line, f"has {len(values)} fields, the header has {len(header)}")
            continue
        out.records.append(Record(dict(zip(header, values)), file, line))


def _read_text(p: Path, out: Loaded, skip_bad: bool, whole_text: bool) -> None:
    file = str(p)
    with _open_bytes(p) as f:
        raw = f.read()
    text = _decode_text(raw, file)
    if whole_text:
        out.records.append(Record({"text": text}, file, 1))
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.records.append(Record({"text": line}, file, lineno))


def _read_parquet(p: Path, out: Loaded) -> None:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(str(p), f"cannot read parquet: {e}") from None
    out.records.extend(Record(r, str(p), i) for i, r in enumerate(rows, 1))


def _read_saved_dataset(p: Path, out: Loaded) -> None:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise DataError(str(p), f"cannot load the saved dataset: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(str(p), f"saved DatasetDict has no train split (has {', '.join(ds)})")
        ds = ds["train"]
    out.records.extend(Record(r, str(p), i) for i, r in enumerate(ds.to_list(), 1))


def _read_hub(dataset_id: str, out: Loaded) -> None:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split="train")
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(dataset_id, f"not a local file or folder, and the dataset hub did not serve it ({why})") from None
    out.records.extend(Record(r, dataset_id, i) for i, r in enumerate(ds.to_list(), 1))
