"""Reading every supported source, and bad input reported as one line naming the file and row; peek_rows reads the
first rows with the same readers, and row_problem is the row check build_data applies."""

from __future__ import annotations

import gzip
import json

import pytest

from peftkit.data import build_data
from peftkit.data.bundle import RowProblem
from peftkit.data.formats import row_problem
from peftkit.data.sources import load_source, peek_rows
from peftkit.errors import DataError
from peftkit.recipe.schema import DataSpec

ROWS = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]


def load(tmp_path, name, *, skip_bad=False, whole_text=False):
    return load_source(name, tmp_path, skip_bad=skip_bad, whole_text=whole_text)


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.jsonl.gz", "d.csv", "d.tsv", "d.parquet"])
def test_each_file_type_reads_the_same_rows(tmp_path, name):
    p = tmp_path / name
    if name == "d.json":
        p.write_text(json.dumps(ROWS))
    elif name == "d.jsonl":
        p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif name == "d.jsonl.gz":
        p.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in ROWS).encode()))
    elif name in ("d.csv", "d.tsv"):
        sep = "," if name == "d.csv" else "\t"
        p.write_text(f"instruction{sep}output\na{sep}b\nc{sep}d\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), p)
    loaded = load(tmp_path, name)
    assert [r.data for r in loaded.records] == ROWS
    assert loaded.records[0].file == str(p)


def test_row_numbers_are_what_the_user_sees(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "d.tsv").write_text('a\tb\n1\t2\n3\t4\n')
    (tmp_path / "d.json").write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert [r.row for r in load(tmp_path, "d.jsonl").records] == [1, 3]  # line numbers
    assert [r.row for r in load(tmp_path, "d.tsv").records] == [2, 3]  # header is line 1
    assert [r.row for r in load(tmp_path, "d.json").records] == [1, 2]  # array elements


def test_tsv_quotes_are_text(tmp_path):
    (tmp_path / "d.tsv").write_text('sentence\tlabel\nhe said "no \t0\n')
    assert load(tmp_path, "d.tsv").records[0].data == {"sentence": 'he said "no ', "label": "0"}


def test_folder_reads_all_files_in_order(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "b.jsonl").write_text('{"x": 2}\n')
    (tmp_path / "data" / "a.json").write_text('[{"x": 1}]')
    (tmp_path / "data" / "notes.md").write_text("ignored")
    assert [r.data["x"] for r in load(tmp_path, "data").records] == [1, 2]


def test_txt_whole_or_by_line(tmp_path):
    (tmp_path / "t.txt").write_text("first\n\nsecond\n")
    assert [r.data["text"] for r in load(tmp_path, "t.txt").records] == ["first", "second"]
    assert load(tmp_path, "t.txt", whole_text=True).records[0].data == {"text": "first\n\nsecond\n"}


@pytest.mark.parametrize("name, content, message, row", [
    ("d.jsonl", b'{"a": 1}\n{"a": \n', "not valid JSON", 2),
    ("d.jsonl", b'{"a": 1}\n{"a": "\xff\xfe"}\n', "not UTF-8", 2),
    ("d.jsonl", b'{"a": 1}\n[1, 2]\n', "expected an object, got list", 2),
    ("d.json", b"", "file is empty", None),
    ("d.jsonl", b"\n\n", "no rows (empty)", None),
    ("d.json", b'{"a": [1], "b": [2]}', "expected a JSON array", None),
    ("d.csv", b"a,b\n1,2,3\n", "has 3 fields, the header has 2", 2),
    ("d.xlsx", b"x", "unknown file type", None),
])
def test_bad_input_is_one_line_naming_file_and_row(tmp_path, name, content, message, row):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as err:
        load(tmp_path, name)
    assert message in str(err.value) and err.value.row == row
    assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_bad_lines_are_counted_when_skipping(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"a": 1}\nnot json\n{"a": 2}\n')
    loaded = load(tmp_path, "d.jsonl", skip_bad=True)
    assert [r.data["a"] for r in loaded.records] == [1, 2]
    assert loaded.skipped == 1 and "row 2: not valid JSON" in loaded.reasons[0]


def test_missing_path(tmp_path):  # hub ids and the hub fallback: test_hub_fallback.py
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path, "nope.jsonl")
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path, "someone/some-dataset")  # load_source reads local files only


def test_saved_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert [r.data for r in load(tmp_path, "saved").records] == ROWS


# ---- peek_rows: the first rows, by the same readers


def write(p, rows):
    """rows as each file type holds them (every value text, so csv/tsv read back equal)."""
    name = p.name
    if name.endswith(".json"):
        p.write_text(json.dumps(rows))
    elif ".jsonl" in name:
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        p.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    elif ".csv" in name or ".tsv" in name:
        sep = "\t" if ".tsv" in name else ","
        text = "".join(sep.join(r.values()) + "\n" for r in [{k: k for k in rows[0]}, *rows]).encode()
        p.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    elif name.endswith(".txt"):
        p.write_text("".join(r["text"] + "\n\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), p)


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.jsonl.gz", "d.csv", "d.tsv.gz", "d.parquet", "d.txt"])
def test_peek_is_the_start_of_the_full_load(tmp_path, name):
    rows = [{"text": f"row {i}"} for i in range(7)]
    write(tmp_path / name, rows)
    full = [(r.row, r.data) for r in load(tmp_path, name).records]
    spec = DataSpec(format="completion" if name == "d.parquet" else "prompt_completion", path=name)
    assert peek_rows(tmp_path / name, spec, 3) == full[:3]
    assert peek_rows(tmp_path / name, spec, 50) == full


def test_peek_stops_reading_at_its_rows(tmp_path):
    """A gzip stream cut short after the first rows: the full load fails on it, the peek never gets there."""
    body = gzip.compress("".join(json.dumps({"n": i}) + "\n" for i in range(5000)).encode())
    (tmp_path / "d.jsonl.gz").write_bytes(body[: len(body) // 2])
    spec = DataSpec(format="completion", path="d.jsonl.gz")
    assert [row for row, _ in peek_rows(tmp_path / "d.jsonl.gz", spec, 3)] == [1, 2, 3]
    with pytest.raises(DataError, match="d.jsonl.gz: cannot read: Compressed file ended") as err:
        load(tmp_path, "d.jsonl.gz")
    assert "\n" not in str(err.value)


def test_peek_keeps_bad_lines_in_place_with_the_full_loads_reason(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"a": 1}\n[1]\n{"a": \n{"a": 2}\n')
    peeked = peek_rows(tmp_path / "d.jsonl", DataSpec(format="prompt_completion", path="d.jsonl"), 5)
    assert [(row, type(v).__name__) for row, v in peeked] == [(1, "dict"), (2, "RowProblem"), (3, "RowProblem"),
                                                              (4, "dict")]
    loaded = load(tmp_path, "d.jsonl", skip_bad=True)
    assert [f"row {row}: {v}" for row, v in peeked if isinstance(v, RowProblem)] == [
        reason.split(", ", 1)[1] for reason in loaded.reasons]


def test_peek_leaves_a_large_json_document_to_the_full_load(tmp_path, monkeypatch):
    write(tmp_path / "d.json", ROWS)
    monkeypatch.setattr("peftkit.data.sources.JSON_PEEK_LIMIT", 10)
    assert peek_rows(tmp_path / "d.json", DataSpec(format="alpaca", path="d.json"), 5) is None


def test_peek_of_whole_text_reads_up_to_its_first_line(tmp_path):
    (tmp_path / "t.txt").write_text("\n\nfirst\nsecond\n")
    spec = DataSpec(format="completion", path="t.txt")
    assert peek_rows(tmp_path / "t.txt", spec, 5) == [(1, {"text": "first"})]
    assert load(tmp_path, "t.txt", whole_text=True).records[0].data == {"text": "\n\nfirst\nsecond\n"}


@pytest.mark.parametrize("name, body, message", [
    ("d.csv", b"a,b\r1,2\r3,\xff\r", "not UTF-8 text (invalid start byte at byte 10)"),  # old Mac line ends
    ("d.txt", b"   \n\t\n", "file is empty"),
    ("d.jsonl.gz", b"not gzip", "cannot read: Not a gzipped file (b'no')"),
])
def test_file_faults_are_the_same_for_peek_and_load(tmp_path, name, body, message):
    (tmp_path / name).write_bytes(body)
    with pytest.raises(DataError) as full:
        load(tmp_path, name)
    with pytest.raises(DataError) as peek:
        peek_rows(tmp_path / name, DataSpec(format="completion", path=name), 2)
    assert str(full.value) == str(peek.value) == f"{tmp_path / name}: {message}"


def test_a_byte_past_the_first_chunk_is_named_by_its_place_in_the_file(tmp_path):
    (tmp_path / "d.txt").write_bytes(b"ok\n" * 5000 + b"\xc3")
    with pytest.raises(DataError, match=r"not UTF-8 text \(unexpected end of data at byte 15000\)"):
        load(tmp_path, "d.txt")


def test_line_numbers_follow_str_splitlines(tmp_path):
    (tmp_path / "t.txt").write_text("a\u2028b\r\nc\rd\n\ne")
    assert [(r.row, r.data["text"]) for r in load(tmp_path, "t.txt").records] == [
        (1, "a"), (2, "b"), (3, "c"), (4, "d"), (6, "e")]


# ---- row_problem: the check build_data applies to every row


@pytest.mark.parametrize("fmt, row, why", [
    ("alpaca", {"instruction": "i", "output": " "}, "field 'output' is empty: nothing to train"),
    ("alpaca", {"instruction": "i", "input": 3, "output": "o"}, "field 'input' should be text, got int"),
    ("prompt_completion", {"completion": "c"}, "missing field 'prompt'"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "conversation has no assistant turn"),
    ("completion", {"text": None}, "field 'text' is null"),
    ("classification", {"text": "t", "label": " "}, "missing field 'label'"),
    ("classification", {"text": "t", "label": 1.5}, "field 'label' should be a label (text or integer), got float"),
])
def test_row_problem_is_the_reason_build_data_gives(tmp_path, fake_tokenizer, fmt, row, why):
    good = {"alpaca": {"instruction": "i", "output": "o"}, "prompt_completion": {"prompt": "p", "completion": "c"},
            "chat": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            "completion": {"text": "t"}, "classification": {"text": "t", "label": "pos"}}[fmt]
    (tmp_path / "d.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    spec = DataSpec(format=fmt, path=str(tmp_path / "d.jsonl"))
    assert row_problem(good, spec) is None
    assert row_problem(row, spec).startswith(why)
    task = "sequence_classification" if fmt == "classification" else "causal_lm"
    with pytest.raises(DataError) as err:
        build_data(spec, fake_tokenizer, seed=0, task=task)
    assert str(err.value) == f"{tmp_path / 'd.jsonl'}, row 2: {row_problem(row, spec)}"
