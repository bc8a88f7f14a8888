"""Preflight: run directory, disk space, base and data checked before any weights load; one-line errors."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from support.tiny_run import make_tokenizer, write_chat
from transformers import LlamaConfig

from peftkit.adapters.estimate import base_shape, estimate_adapter_params
from peftkit.data import build_data
from peftkit.errors import DataError, ModelError, PeftkitError, RecipeError, RunDirError
from peftkit.recipe import Recipe, recipe_from_dict
from peftkit.training.preflight import FLOOR_ADAPTER_BYTES, MARGIN_BYTES, preflight

Usage = namedtuple("Usage", "total used free")
TINY = {"vocab_size": 400, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture
def base(tmp_path) -> Path:
    """A base folder as preflight sees it: config.json only (no weights are read)."""
    folder = tmp_path / "base"
    LlamaConfig(**TINY).save_pretrained(folder)
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return write_chat(tmp_path / "chat.jsonl", n=8)


def tiny_recipe(base, path, run_dir, **sections) -> Recipe:
    """A recipe around a base folder and a data path; each keyword updates that section (data= included)."""
    raw = {"name": "tiny", "model": {"base": str(base)}, "adapter": {"rank": 4},
           "data": {"format": "chat", "path": str(path), "eval_fraction": 0.25}, "output": {"dir": str(run_dir)}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return recipe_from_dict(raw)


def one_line(err: PeftkitError) -> str:
    text = str(err)
    assert text.strip() and len(text.splitlines()) == 1
    return text


def fake_disk(monkeypatch, free: int) -> list[str]:
    seen: list[str] = []

    def usage(path):
        seen.append(str(path))
        return Usage(10**12, 10**12 - free, free)

    monkeypatch.setattr(importlib.import_module("peftkit.training.preflight").shutil, "disk_usage", usage)
    return seen


def test_good_recipe_passes_and_writes_nothing(tmp_path, base, data):
    run = tmp_path / "runs" / "tiny"
    before = sorted(tmp_path.rglob("*"))
    report = preflight(tiny_recipe(base, data, run), run, resume=False)
    assert sorted(tmp_path.rglob("*")) == before  # the probe is gone, the run directory not created yet
    assert report.run_dir == run and report.data_files == (str(data),) and report.rows_checked == 5
    assert report.size_basis.startswith("config.json: 2 layers, hidden 64")
    assert report.need_bytes == report.adapter_bytes * 3 * (2 + 1) + report.adapter_bytes + MARGIN_BYTES
    assert report.free_bytes >= report.need_bytes


def test_adapter_estimate_bounds_the_real_lora_from_above(tmp_path, base, data):
    """all-linear LoRA r=4 on the tiny Llama: the estimate may over-count (at most 2x), never under-count."""
    import peft
    from transformers import LlamaForCausalLM

    model = peft.get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY)), peft.LoraConfig(r=4, target_modules="all-linear"))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad) * 4
    report = preflight(tiny_recipe(base, data, tmp_path / "run"), tmp_path / "run", resume=False)
    assert real <= report.adapter_bytes <= 2 * real
    attention = preflight(tiny_recipe(base, data, tmp_path / "run", adapter={"targets": "attention"}),
                          tmp_path / "run", resume=False)
    assert attention.adapter_bytes < report.adapter_bytes


def test_size_is_the_adapters_layer_estimate(tmp_path, base, data):
    recipe = tiny_recipe(base, data, tmp_path / "run", adapter={"method": "oft", "rank": 16, "block_size": 16})
    shape = base_shape(json.loads((base / "config.json").read_text()))
    assert preflight(recipe, tmp_path / "run", resume=False).adapter_bytes == 4 * estimate_adapter_params(
        recipe.adapter, shape)


def test_run_dir_under_a_regular_file_is_not_writable(tmp_path, base, data):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    run = blocker / "run"
    with pytest.raises(RunDirError) as err:
        preflight(tiny_recipe(base, data, run), run, resume=False)
    assert f"output.dir {run}: {blocker} is a file, not a folder" == one_line(err.value)
    assert blocker.read_text() == "not a folder"


def test_run_dir_that_is_a_file(tmp_path, base, data):
    run = tmp_path / "run"
    run.write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        preflight(tiny_recipe(base, data, run), run, resume=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder anyway; the file-parent case covers it")
def test_read_only_folder_is_not_writable(tmp_path, base, data):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(RunDirError, match="not writable"):
            preflight(tiny_recipe(base, data, locked / "run"), locked / "run", resume=False)
    finally:
        locked.chmod(0o700)


def test_non_empty_run_dir_is_refused_unless_resuming_or_forced(tmp_path, base, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match="not empty"):
        preflight(tiny_recipe(base, data, run), run, resume=False)
    preflight(tiny_recipe(base, data, run), run, resume=True)
    preflight(tiny_recipe(base, data, run), run, resume=False, force=True)
    preflight(tiny_recipe(base, data, run, train={"resume": "auto"}), run, resume=False)
    assert (run / "metrics.json").read_text() == "{}"  # preflight never clobbers


def test_not_enough_disk(tmp_path, base, data, monkeypatch):
    run = tmp_path / "runs" / "tiny"
    recipe = tiny_recipe(base, data, run, train={"keep_checkpoints": 3})
    need = preflight(recipe, run, resume=False).need_bytes
    seen = fake_disk(monkeypatch, need - 1)
    with pytest.raises(RunDirError) as err:
        preflight(recipe, run, resume=False)
    text = one_line(err.value)
    assert text.startswith(f"output.dir {run}: ") and "4 checkpoints" in text and "train.keep_checkpoints" in text
    assert seen == [str(tmp_path)]  # measured on the nearest folder that exists
    fake_disk(monkeypatch, need)
    assert preflight(recipe, run, resume=False).need_bytes == need


def test_disk_need_grows_with_kept_checkpoints_and_rank(tmp_path, base, data):
    run = tmp_path / "run"
    small = preflight(tiny_recipe(base, data, run), run, resume=False)
    more = preflight(tiny_recipe(base, data, run, train={"keep_checkpoints": 5}), run, resume=False)
    wider = preflight(tiny_recipe(base, data, run, adapter={"rank": 64}), run, resume=False)
    assert more.need_bytes - small.need_bytes == 3 * 3 * small.adapter_bytes
    assert wider.adapter_bytes > 10 * small.adapter_bytes


def test_floor_when_the_base_is_not_on_disk(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    hub = preflight(tiny_recipe("someorg/some-model", data, run), run, resume=False)
    assert hub.adapter_bytes == FLOOR_ADAPTER_BYTES and hub.size_basis.startswith("floor")
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "empty-cache"))  # zoo alias not pulled: no download here
    zoo = preflight(tiny_recipe("smollm2-135m-instruct", data, run), run, resume=False)
    assert zoo.adapter_bytes == FLOOR_ADAPTER_BYTES
    assert not (tmp_path / "empty-cache").exists()
    fake_disk(monkeypatch, 10 * 2**20)
    with pytest.raises(ModelError, match="smollm2-135m-instruct.*pulling it needs about"):
        preflight(tiny_recipe("smollm2-135m-instruct", data, run), run, resume=False)


def test_format_that_does_not_fit_the_task(tmp_path, base, data):
    with pytest.raises(RecipeError) as err:
        preflight(tiny_recipe(base, data, tmp_path / "run", data={"format": "classification"}), tmp_path / "run",
                  resume=False)
    assert one_line(err.value).startswith("data.format: does not fit model.task causal_lm")


def test_path_too_long_for_the_os(tmp_path, base, data):
    long = tmp_path / ("x" * 5000 + ".jsonl")
    with pytest.raises(DataError, match=r"cannot read \(data.eval_path\): File name too long"):
        preflight(tiny_recipe(base, data, tmp_path / "run", data={"eval_path": str(long)}), tmp_path / "run",
                  resume=False)
    with pytest.raises(RunDirError, match="not writable"):
        preflight(tiny_recipe(base, data, long), long, resume=False)


@pytest.mark.parametrize("make", ["missing", "no config"])
def test_base_that_cannot_exist(tmp_path, data, make):
    folder = tmp_path / "nope"
    if make == "no config":
        folder.mkdir()
    with pytest.raises(ModelError) as err:
        preflight(tiny_recipe(folder, data, tmp_path / "run"), tmp_path / "run", resume=False)
    assert str(folder) in one_line(err.value)


@pytest.mark.parametrize("key", ["path", "eval_path", "mix"])
def test_missing_data_file_names_path_and_key(tmp_path, base, data, key):
    gone = tmp_path / "gone.jsonl"
    value = {"mix": [{"path": str(gone)}]} if key == "mix" else {key: str(gone)}
    with pytest.raises(DataError) as err:
        preflight(tiny_recipe(base, data, tmp_path / "run", data=value), tmp_path / "run", resume=False)
    assert err.value.file == str(gone)
    assert one_line(err.value) == f"{gone}: no such file or folder (data.{'mix.0.path' if key == 'mix' else key})"


def test_builtin_and_hub_data_are_not_opened(tmp_path, base):
    for path in ("builtin:person-extraction", "someorg/some-dataset"):
        report = preflight(tiny_recipe(base, Path(path), tmp_path / "run"), tmp_path / "run", resume=False)
        assert report.data_files == () and report.rows_checked == 0


def test_unparseable_first_row_fails_like_build_data(tmp_path, base, data):
    lines = data.read_text().splitlines()
    lines[2] = lines[2][:20]  # truncated JSON on line 3
    data.write_text("\n".join(lines) + "\n")
    recipe = tiny_recipe(base, data, tmp_path / "run")
    with pytest.raises(DataError) as early:
        preflight(recipe, tmp_path / "run", resume=False)
    with pytest.raises(DataError) as late:
        build_data(recipe.data, make_tokenizer(), base_dir=tmp_path, seed=0)
    assert one_line(early.value) == str(late.value) and early.value.row == 3
    skip = tiny_recipe(base, data, tmp_path / "run", data={"on_bad_row": "skip"})
    assert preflight(skip, tmp_path / "run", resume=False).rows_checked == 5


def test_invalid_first_row_for_the_format(tmp_path, base, data):
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    rows[1]["messages"] = rows[1]["messages"][:1]  # no assistant turn
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe(base, data, tmp_path / "run", data={"eval_path": str(data)})
    with pytest.raises(DataError) as early:
        preflight(recipe, tmp_path / "run", resume=False)
    assert early.value.row == 2 and "no assistant turn" in one_line(early.value)
    with pytest.raises(DataError) as late:
        build_data(recipe.data, make_tokenizer(), base_dir=tmp_path, seed=0)
    assert str(early.value) == str(late.value)


def test_wrong_format_with_skip_fails_when_no_first_row_is_usable(tmp_path, base, data):
    recipe = tiny_recipe(base, data, tmp_path / "run", data={"format": "alpaca", "on_bad_row": "skip"})
    with pytest.raises(DataError) as err:
        preflight(recipe, tmp_path / "run", resume=False)
    assert "none of the first 5 rows is usable: missing field 'instruction'" in one_line(err.value)
    assert err.value.row == 1


@pytest.mark.parametrize("name, body, row, message", [
    ("d.csv", b"prompt,completion\nhi,there\na,b,c\n", 3, "has 3 fields, the header has 2"),
    ("d.tsv", b"prompt\tcompletion\nhi\t \n", 2, "field 'completion' is empty"),
    ("d.csv", b"prompt,completion\n\xff\xfe,x\n", None, "not UTF-8 text"),
    ("d.csv", b"prompt,completion\n", None, "no rows (empty)"),
    ("d.json", b'{"rows": [{"prompt": "a"}]}', 1, "missing field 'completion'"),
    ("d.json", b"[1, 2", None, "not valid JSON"),
    ("d.jsonl", b"\n\n", None, "no rows (empty)"),
    ("d.jsonl", b'{"prompt": "a", "completion": "b"}\n\xff\n', 2, "not UTF-8 text"),
    ("d.xlsx", b"PK", None, "unknown file type"),
])
def test_first_rows_by_file_type(tmp_path, base, name, body, row, message):
    path = tmp_path / name
    path.write_bytes(body)
    recipe = tiny_recipe(base, path, tmp_path / "run", data={"format": "prompt_completion"})
    with pytest.raises(DataError) as err:
        preflight(recipe, tmp_path / "run", resume=False)
    assert err.value.file == str(path) and err.value.row == row and message in one_line(err.value)


def test_a_json_document_too_big_to_parse_twice_is_left_to_build_data(tmp_path, base, monkeypatch):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "a"}]))  # a bad row, not looked at
    monkeypatch.setattr("peftkit.data.sources.JSON_PEEK_LIMIT", 4)
    report = preflight(tiny_recipe(base, path, tmp_path / "run", data={"format": "prompt_completion"}),
                       tmp_path / "run", resume=False)
    assert report.data_files == (str(path),) and report.rows_checked == 0


def test_folder_of_files_and_empty_folder(tmp_path, base, data):
    folder = tmp_path / "parts"
    folder.mkdir()
    with pytest.raises(DataError, match="folder has no data files"):
        preflight(tiny_recipe(base, folder, tmp_path / "run"), tmp_path / "run", resume=False)
    shutil.copy(data, folder / "a.jsonl")
    report = preflight(tiny_recipe(base, folder, tmp_path / "run"), tmp_path / "run", resume=False)
    assert report.data_files == (str(folder / "a.jsonl"),)
