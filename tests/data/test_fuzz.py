"""Property-based robustness of the data layer: malformed rows of every format, written as jsonl / json / csv /
tsv, end in a one-line DataError naming the file and a row that really is bad (data.on_bad_row: error), or are
skipped and counted exactly (skip). Never another exception type.

Every generated dataset mixes valid rows with rows broken in ways that are wrong by construction, so the test
knows which row numbers may be named and how many skips to expect."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftkit.data import build_data
from peftkit.data.formats import DEFAULT_ROLES
from peftkit.errors import DataError
from peftkit.recipe import recipe_from_dict
from peftkit.recipe.schema import DataSpec
from peftkit.training.preflight import preflight

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

# Text a valid row may hold: any printable text (no line breaks: TSV is unquoted; no "<|": ChatML markers).
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\t"),
                min_size=1, max_size=16).filter(lambda s: s.strip() and "<|" not in s)
not_text = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=1))
blank = st.sampled_from(["", " ", "\n", "\t "])


@dataclass(frozen=True)
class Fmt:
    format: str
    task: str
    columns: tuple[str, ...]  # fields of a flat row (csv/tsv); empty: nested rows, JSON only
    response: str | None  # the field that must be non-blank text


FORMATS = {
    "alpaca": Fmt("alpaca", "causal_lm", ("instruction", "input", "output"), "output"),
    "prompt_completion": Fmt("prompt_completion", "causal_lm", ("prompt", "completion"), "completion"),
    "classification": Fmt("classification", "sequence_classification", ("text", "label"), "label"),
    "completion": Fmt("completion", "causal_lm", ("text",), None),
    "chat": Fmt("chat", "causal_lm", (), None),
    "sharegpt": Fmt("chat", "causal_lm", (), None),
}

# ---- valid rows


@st.composite
def good_row(draw, name: str) -> dict:
    if name == "chat" or name == "sharegpt":
        role, text = ("role", "content") if name == "chat" else ("from", "value")
        user, bot = ("user", "assistant") if name == "chat" else ("human", "gpt")
        turns = [{role: "system", text: draw(words)}] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(1, 2))):
            turns += [{role: user, text: draw(words)}, {role: bot, text: draw(words)}]
        return {"messages" if name == "chat" else "conversations": turns}
    if name == "classification":
        return {"text": draw(words), "label": draw(st.one_of(st.sampled_from(["pos", "neg"]), words))}
    fmt = FORMATS[name]
    return {c: draw(words) for c in fmt.columns}


# ---- rows that are wrong by construction


@st.composite
def bad_row(draw, name: str, flat: bool) -> dict | list:
    """A row build_data must refuse. `flat`: it will be written as a csv/tsv line (every value text)."""
    row = draw(good_row(name))
    fmt = FORMATS[name]
    if flat:
        kind = draw(st.sampled_from(["ragged", "blank response"] if fmt.response else ["ragged"]))
        if kind == "ragged":
            extra = draw(st.lists(words, min_size=1, max_size=2))
            cut = draw(st.booleans()) and len(fmt.columns) > 1
            return list(row.values())[:-1] if cut else [*row.values(), *extra]
        row[fmt.response] = draw(st.sampled_from(["", " ", "  "]))
        return row
    if name in ("chat", "sharegpt"):
        return _bad_chat(draw, row, name)
    required = {"alpaca": ["instruction", "output"], "prompt_completion": ["prompt", "completion"],
                "classification": ["text", "label"], "completion": ["text"]}[name]
    field = draw(st.sampled_from([*required, *(c for c in fmt.columns if c not in required)]))
    choices = ["missing", "null", "not text"] if field in required else ["not text"]
    if field == fmt.response and name != "classification":
        choices.append("blank")
    kind = draw(st.sampled_from(choices))
    if kind == "missing":
        del row[field]
    elif kind == "null":
        row[field] = None
    elif kind == "blank":
        row[field] = draw(blank)
    else:
        value = draw(not_text)
        if name == "classification" and field == "label":  # an integer label is a valid class id
            value = draw(st.one_of(st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2)))
        row[field] = value
    return row


def _bad_chat(draw, row: dict, name: str):
    key = "messages" if name == "chat" else "conversations"
    role, text = ("role", "content") if name == "chat" else ("from", "value")
    turns = row[key]
    bot = [i for i, t in enumerate(turns) if t[role] in ("assistant", "gpt")]
    kind = draw(st.sampled_from(["no list", "no assistant", "turn not object", "no role", "unknown role",
                                 "content not text", "assistant first", "empty reply", "missing"]))
    at = draw(st.integers(0, len(turns) - 1))
    if kind == "missing":
        del row[key]
    elif kind == "no list":
        row[key] = draw(st.one_of(words, st.integers(), st.none(), st.dictionaries(words, words, max_size=1)))
    elif kind == "no assistant":
        row[key] = [t for i, t in enumerate(turns) if i not in bot]
    elif kind == "turn not object":
        turns[at] = draw(st.one_of(words, st.integers(), st.none(), st.lists(words, max_size=1)))
    elif kind == "no role":
        del turns[at][role]
    elif kind == "unknown role":
        turns[at][role] = draw(st.one_of(words.filter(lambda r: r.lower() not in DEFAULT_ROLES), st.integers(),
                                         st.none()))
    elif kind == "content not text":
        turns[at][text] = draw(st.one_of(st.none(), not_text))
    elif kind == "assistant first":
        row[key] = [t for t in turns if t[role] not in ("user", "human", "system")]
    else:
        turns[bot[-1]][text] = draw(blank)
    return row


# ---- files


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    body: bytes
    bad_rows: frozenset[int]  # row numbers (as DataError reports them) that are wrong
    good: int  # rows that must come out as examples
    file_level: bool  # the whole file is unusable (no row to name)


LINE_JUNK = {  # a jsonl line that is not a row object
    "truncated": lambda draw, text: text[: draw(st.integers(1, len(text) - 1))].encode(),
    "undecodable": lambda draw, text: text[:5].encode() + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])),
    "not an object": lambda draw, text: draw(st.sampled_from([b"5", b'"text"', b"[1, 2]", b"null", b"true"])),
}


@st.composite
def cases(draw, suffixes=(".jsonl", ".json", ".csv", ".tsv")) -> Case:
    name = draw(st.sampled_from(sorted(FORMATS)))
    flat_ok = bool(FORMATS[name].columns)
    suffix = draw(st.sampled_from([s for s in suffixes if flat_ok or s in (".jsonl", ".json")]))
    flat = suffix in (".csv", ".tsv")
    n = draw(st.integers(1, 7))
    bad_at = set(draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True)))
    rows = [draw(bad_row(name, flat)) if i in bad_at else draw(good_row(name)) for i in range(n)]
    if suffix == ".jsonl":
        return _jsonl(draw, name, rows, bad_at)
    if suffix == ".json":
        junk = {i for i in bad_at if draw(st.integers(0, 3)) == 0}
        items = [draw(st.sampled_from([5, "text", [1], None])) if i in junk else r for i, r in enumerate(rows)]
        return Case(name, suffix, json.dumps(items).encode(), frozenset(i + 1 for i in bad_at), n - len(bad_at), False)
    return _table(draw, name, suffix, rows, bad_at)


def _jsonl(draw, name: str, rows: list, bad_at: set[int]) -> Case:
    lines, bad_rows = [], set()
    for i, row in enumerate(rows):
        while draw(st.integers(0, 5)) == 5:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t"])))  # blank lines are skipped, but counted
        text = json.dumps(row, ensure_ascii=draw(st.booleans()))
        if i in bad_at and draw(st.integers(0, 2)) == 0:
            lines.append(LINE_JUNK[draw(st.sampled_from(sorted(LINE_JUNK)))](draw, text))
        else:
            lines.append(text.encode())
        if i in bad_at:
            bad_rows.add(len(lines))
    return Case(name, ".jsonl", b"\n".join(lines) + b"\n", frozenset(bad_rows), len(rows) - len(bad_at), False)


def _table(draw, name: str, suffix: str, rows: list, bad_at: set[int]) -> Case:
    columns = list(FORMATS[name].columns)
    if suffix == ".tsv":
        lines = ["\t".join(columns)] + ["\t".join(r.values() if isinstance(r, dict) else r) for r in rows]
        text = "\n".join(lines) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(list(r.values()) if isinstance(r, dict) else r for r in rows)
        text = buf.getvalue()
    return Case(name, suffix, text.encode(), frozenset(i + 2 for i in bad_at), len(rows) - len(bad_at), False)


def build(case: Case, folder: Path, tokenizer, *, skip: bool):
    path = folder / f"data{case.suffix}"
    path.write_bytes(case.body)
    spec = DataSpec(format=FORMATS[case.name].format, path=str(path), on_bad_row="skip" if skip else "error")
    return path, build_data(spec, tokenizer, base_dir=folder, seed=0, task=FORMATS[case.name].task)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-fuzz")


def one_line(err: DataError) -> str:
    text = str(err)
    assert text.strip() and len(text.splitlines()) == 1, repr(text)
    return text


def examples(bundle, case: Case) -> int:
    """Examples built, in rows: completion packs all its documents into windows, so there it is 'any'."""
    n = bundle.report.train.examples + bundle.report.eval.examples
    return case.good if case.name == "completion" and n else n


# ---- properties


@FUZZ
@given(case=cases())
def test_bad_row_is_named_or_data_builds(folder, fake_tokenizer, case):
    try:
        _, bundle = build(case, folder, fake_tokenizer, skip=False)
    except DataError as err:
        text = one_line(err)
        assert err.file == str(folder / f"data{case.suffix}") and err.file in text
        assert case.bad_rows, f"valid data refused: {text}"
        assert err.row in case.bad_rows, f"row {err.row} named, bad rows are {sorted(case.bad_rows)}: {text}"
        assert f"row {err.row}:" in text
        return
    assert not case.bad_rows, f"bad rows {sorted(case.bad_rows)} were accepted"
    assert examples(bundle, case) == case.good


@FUZZ
@given(case=cases())
def test_skip_drops_exactly_the_bad_rows(folder, fake_tokenizer, case):
    try:
        _, bundle = build(case, folder, fake_tokenizer, skip=True)
    except DataError as err:
        text = one_line(err)
        assert err.file == str(folder / f"data{case.suffix}")
        # only when nothing is left to train on
        assert "no usable" in text or "no rows" in text, text
        assert case.good <= 1, f"{case.good} good rows, but: {text}"
        return
    report = bundle.report
    assert report.train.skipped + report.eval.skipped == len(case.bad_rows)
    assert examples(bundle, case) == case.good >= 1
    assert report.train.examples >= 1
    for reason in report.skip_reasons:
        assert len(reason.splitlines()) == 1
        assert int(reason.split(", row ")[1].split(":")[0]) in case.bad_rows, reason


@FUZZ
@given(case=cases(), skip=st.booleans())
def test_preflight_is_never_stricter_than_build_data(folder, fake_tokenizer, case, skip):
    """Preflight reads only the first rows, before any weights: what it refuses, build_data refuses too."""
    path = folder / f"pre{case.suffix}"
    path.write_bytes(case.body)
    fmt = FORMATS[case.name]
    recipe = recipe_from_dict({"name": "fuzz", "model": {"base": "someorg/some-model", "task": fmt.task},
                               "data": {"format": fmt.format, "path": str(path), "on_bad_row": "skip" if skip else "error"}})
    try:
        preflight(recipe, folder / "run", resume=False)
    except DataError as err:
        assert err.file == str(path) and err.file in one_line(err)
        assert err.row is None or err.row in case.bad_rows, f"row {err.row} named, bad rows are {sorted(case.bad_rows)}"
        if not skip:
            with pytest.raises(DataError):
                build_data(recipe.data, fake_tokenizer, base_dir=folder, seed=0, task=fmt.task)


# ---- whole files that are unusable


@st.composite
def broken_files(draw):
    name = draw(st.sampled_from(sorted(FORMATS)))
    suffix = draw(st.sampled_from([".jsonl", ".json", ".csv", ".tsv"] if FORMATS[name].columns else [".jsonl", ".json"]))
    kind = draw(st.sampled_from(["empty", "whitespace", "random bytes", "undecodable", "truncated json",
                                 "header only", "no required column"]))
    good = json.dumps([draw(good_row(name)) for _ in range(2)])
    body = {
        "empty": b"",
        "whitespace": b" \n\n\t\n",
        "random bytes": draw(st.binary(min_size=1, max_size=64)),
        "undecodable": b"\xff\xfe\x00garbage\x80",
        "truncated json": good[: draw(st.integers(1, len(good) - 1))].encode(),
        "header only": ",".join(FORMATS[name].columns or ("messages",)).encode() + b"\n",
        "no required column": b"unrelated,other\nx,y\nz,w\n",
    }[kind]
    return name, suffix, body


@FUZZ
@given(spec=broken_files(), skip=st.booleans())
def test_unusable_files_end_in_one_data_error(folder, fake_tokenizer, spec, skip):
    name, suffix, body = spec
    path = folder / f"broken{suffix}"
    path.write_bytes(body)
    data = DataSpec(format=FORMATS[name].format, path=str(path), on_bad_row="skip" if skip else "error")
    try:
        bundle = build_data(data, fake_tokenizer, base_dir=folder, seed=0, task=FORMATS[name].task)
    except DataError as err:
        assert err.file == str(path) and err.file in one_line(err)
        return
    assert bundle.report.train.examples >= 1  # random bytes that happen to be a valid file


@pytest.mark.parametrize("name", ["alpaca", "chat", "classification"])
def test_all_rows_bad_with_skip_is_no_usable_rows(folder, fake_tokenizer, name):
    path = folder / f"allbad-{name}.jsonl"
    path.write_text("\n".join(json.dumps({"unrelated": i}) for i in range(4)) + "\n")
    spec = DataSpec(format=FORMATS[name].format, path=str(path), on_bad_row="skip")
    with pytest.raises(DataError, match="no usable rows") as err:
        build_data(spec, fake_tokenizer, base_dir=folder, seed=0, task=FORMATS[name].task)
    assert err.value.file == str(path) and "4 skipped" in str(err.value)


@pytest.mark.parametrize("label", ["²", "--5", "-", "1_0", "٣"])
def test_odd_digit_labels_are_names_not_crashes(folder, fake_tokenizer, label):
    path = folder / "labels.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": lab}) for i, lab in
                              enumerate([label, "0", "1", label])) + "\n")
    spec = DataSpec(format="classification", path=str(path), eval_fraction=0.25)
    bundle = build_data(spec, fake_tokenizer, base_dir=folder, seed=0, task="sequence_classification")
    assert label in bundle.label_names
    assert bundle.report.train.examples + bundle.report.eval.examples == 4


def test_label_with_a_line_break_keeps_the_error_on_one_line(folder, fake_tokenizer):
    path = folder / "nl.jsonl"
    path.write_text("\n".join(json.dumps({"text": "t", "label": lab}) for lab in ["a\nb", "c", "c"]) + "\n")
    spec = DataSpec(format="classification", path=str(path), eval_path=str(path), label_names=("c",))
    with pytest.raises(DataError) as err:
        build_data(spec, fake_tokenizer, base_dir=folder, seed=0, task="sequence_classification")
    assert err.value.row == 1 and one_line(err.value)


def test_path_too_long_for_the_os_is_a_data_error(folder, fake_tokenizer):
    spec = DataSpec(format="chat", path="x" * 5000 + ".jsonl")
    with pytest.raises(DataError, match="cannot read: File name too long"):
        build_data(spec, fake_tokenizer, base_dir=folder, seed=0)
