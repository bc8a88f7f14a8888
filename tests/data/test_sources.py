"""Reading every supported source, and bad input reported as one line naming the file and row."""

from __future__ import annotations

import gzip
import json

import pytest

from peftkit.data.sources import load_source
from peftkit.errors import DataError

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


def test_missing_path_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path, "nope.jsonl")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="dataset hub did not serve it") as err:
        load(tmp_path, "someone/some-dataset")
    assert "\n" not in str(err.value)


def test_saved_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert [r.data for r in load(tmp_path, "saved").records] == ROWS
