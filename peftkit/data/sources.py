"""Reading rows from the files users bring: json, jsonl(.gz), csv/tsv, parquet, txt, a folder (hub datasets: hub.py).

Line formats are parsed here rather than through `datasets.load_dataset`, so that a bad line is reported with
its file and line number (datasets raises a pyarrow traceback instead). Parquet and `save_to_disk` folders go
through pyarrow / `datasets`.

Each file format has one reader, a generator of (row number, row or RowProblem): `load_source` drains it,
`peek_rows` takes its first rows, so a check of the first rows cannot disagree with the full load.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..errors import DataError
from ..recipe.schema.data import DataSpec
from .bundle import RowProblem

LINE_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json.gz")
SUFFIXES = (".json", *LINE_SUFFIXES, ".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".txt", ".txt.gz")
JSON_PEEK_LIMIT = 64 * 2**20  # a .json file is one document: peeking at a bigger one would cost a second full parse
PARQUET_BATCH = 65_536  # rows per pyarrow batch when the whole file is read

Item = tuple[int, dict | RowProblem]  # a row number as DataError names it, and the row or why it is unusable


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
    """All rows of a local file or folder. `whole_text`: a .txt file is one row {"text": ...}
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
    else:
        raise DataError(str(p), "no such file or folder")
    if not out.records:
        raise DataError(str(p), "no rows" + (f" ({out.skipped} skipped as bad)" if out.skipped else " (empty)"))
    return out


def peek_rows(path: Path, spec: DataSpec, n: int) -> list[Item] | None:
    """The first `n` rows of one data file, read as load_source reads them but stopping there (a bad line is a
    RowProblem in its place; a file-level fault is the same DataError). None for a .json file over
    JSON_PEEK_LIMIT: the full load parses it anyway."""
    with _reading(path):
        if path.name.lower().endswith(".json") and path.stat().st_size > JSON_PEEK_LIMIT:
            return None
        with closing(_items(path, spec.format == "completion", head=n)) as items:
            return list(islice(items, n))


def folder_files(p: Path) -> list[Path] | None:
    """The data files a folder holds, in the order they are read; None for a `save_to_disk` folder."""
    if (p / "dataset_info.json").exists() or (p / "state.json").exists():
        return None
    return sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))


def _read_folder(p: Path, out: Loaded, skip_bad: bool, whole_text: bool) -> None:
    files = folder_files(p)
    if files is None:
        _read_saved_dataset(p, out)
        return
    if not files:
        raise DataError(str(p), f"folder has no data files ({', '.join(SUFFIXES)})")
    for f in files:
        _read_file(f, out, skip_bad, whole_text)


def _read_file(p: Path, out: Loaded, skip_bad: bool, whole_text: bool) -> None:
    file = str(p)
    with _reading(p):
        for row, value in _items(p, whole_text):
            if isinstance(value, RowProblem):
                if not skip_bad:
                    raise DataError(file, str(value), row=row)
                out.skip(file, row, str(value))
            else:
                out.records.append(Record(value, file, row))


@contextmanager
def _reading(p: Path) -> Iterator[None]:
    """A file that cannot be read (or a .gz that is not gzip) is one DataError naming it."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(str(p), f"cannot read: {getattr(e, 'strerror', None) or e}") from None


# ---- one reader per file format: (row number, row or RowProblem), lazily; `head`: only that many are wanted


def _items(p: Path, whole_text: bool, head: int | None = None) -> Iterator[Item]:
    name = p.name.lower()
    if name.endswith(".parquet"):
        return _parquet_items(p, head)
    if name.endswith(LINE_SUFFIXES):
        return _jsonl_items(p)
    if name.endswith(".json"):
        return _json_items(p)
    if name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        return _table_items(p, delimiter="\t" if ".tsv" in name else ",")
    if name.endswith((".txt", ".txt.gz")):
        return _text_items(p, whole_text, head)
    raise DataError(str(p), f"unknown file type; use one of {', '.join(SUFFIXES)}")


def _open_bytes(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _row(value) -> dict | RowProblem:
    return value if isinstance(value, dict) else RowProblem(f"expected an object, got {type(value).__name__}")


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def _not_utf8(e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text ({e.reason} at byte {e.start})"


def _lines(p: Path, encoding: str) -> Iterator[str]:
    """The file's lines as they stream in, split as open(newline="") splits them (\\n, \\r\\n or \\r kept)."""
    with _open_bytes(p) as fb, io.TextIOWrapper(fb, encoding=encoding, newline="") as text:
        try:
            yield from text
        except UnicodeDecodeError:
            pass
        else:
            return
    # The stream's error counts bytes from the start of its chunk: decode the whole file to name the byte.
    with _open_bytes(p) as fb:
        try:
            fb.read().decode(encoding)
        except UnicodeDecodeError as e:
            raise DataError(str(p), _not_utf8(e)) from None
    raise DataError(str(p), "not UTF-8 text")


def _jsonl_items(p: Path) -> Iterator[Item]:
    with _open_bytes(p) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, RowProblem(_not_utf8(e))
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, RowProblem(f"not valid JSON: {e.msg} (column {e.colno})")
                continue
            yield lineno, _row(value)


def _json_items(p: Path) -> Iterator[Item]:
    file = str(p)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(file, _not_utf8(e)) from None
    if not text.strip():
        raise DataError(file, "file is empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON objects, one per line: JSON Lines named .json
            yield from _jsonl_items(p)
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
        yield i, _row(item)


def _table_items(p: Path, delimiter: str) -> Iterator[Item]:
    # TSV files (GLUE and most exports) are not quoted: a '"' inside a sentence is text, not a quote.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(_lines(p, "utf-8-sig"), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if not header:
        raise DataError(str(p), "file is empty")
    header = [h.strip() for h in header]
    for values in reader:
        line = reader.line_num  # 1-based line in the file, header is line 1
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield line, RowProblem(f"has {len(values)} fields, the header has {len(header)}")
        else:
            yield line, dict(zip(header, values))


def _text_items(p: Path, whole_text: bool, head: int | None) -> Iterator[Item]:
    """One row per non-blank line; `whole_text`: the whole file is one row (for a `head`, its first non-blank
    line stands in for it: the row check asks no more of it than that it is text)."""
    lines = _lines(p, "utf-8")
    if whole_text and head is None:
        text = "".join(lines)
        if not text.strip():
            raise DataError(str(p), "file is empty")
        yield 1, {"text": text}
        return
    lineno, found = 0, False
    for physical in lines:
        for line in physical.splitlines():  # as str.splitlines on the whole text: \v, \f, \x85, \u2028 too
            lineno += 1
            if line.strip():
                found = True
                yield (1 if whole_text else lineno), {"text": line}
                if whole_text:
                    return
    if not found:
        raise DataError(str(p), "file is empty")


def _parquet_items(p: Path, head: int | None) -> Iterator[Item]:
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(p).iter_batches(batch_size=head or PARQUET_BATCH):
            for value in batch.to_pylist():
                row += 1
                yield row, value
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(str(p), f"cannot read parquet: {_first_line(e)}") from None


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

