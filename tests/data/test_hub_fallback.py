"""A data path's public source (data.hub): the local copy wins when it exists, the hub split stands in when it is
absent, an unreachable hub is one line naming both, and the data report records which one was read."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftkit import load_recipe
from peftkit.data import build_data
from peftkit.data.hub import choose, choose_sources
from peftkit.errors import DataError
from peftkit.recipe import recipe_from_dict
from peftkit.recipe.schema.data import HUB_DATASET_ID, DataSpec, HubSource
from peftkit.training.preflight import preflight

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHIPPED = sorted(RECIPES.rglob("*.yaml"))

HH_LIKE = [{"chosen": f"\n\nHuman: question {i}\n\nAssistant: answer {i}",
            "rejected": f"\n\nHuman: question {i}\n\nAssistant: no"} for i in range(20)]
HH_SPEC = dict(format="chat", columns={"messages": "chosen"}, eval_fraction=0.2,
               transcript_roles={"Human": "user", "Assistant": "assistant"})
HUB = {"id": "org/hh-like", "data_dir": "helpful-base", "split": "test"}


def write_gz(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def never(*args, **kwargs):
    raise AssertionError("the hub was asked although the local copy exists")


def offline(*args, **kwargs):  # what datasets.load_dataset raises with HF_DATASETS_OFFLINE=1
    raise ConnectionError(f"Couldn't reach '{args[0]}' on the Hub (OfflineModeIsEnabled)\nsecond line")


def from_rows(rows: list[dict], seen: list | None = None):
    def load(dataset_id, **kwargs):
        if seen is not None:
            seen.append((dataset_id, kwargs))
        return list(rows)
    return load


def test_local_copy_present_is_read_and_the_hub_not_touched(tmp_path, fake_tokenizer):
    local = write_gz(tmp_path / "test.jsonl.gz", HH_LIKE)
    spec = DataSpec(**HH_SPEC, path=str(local), hub=HUB)
    bundle = build_data(spec, fake_tokenizer, seed=0, hub_loader=never)
    (read,) = bundle.report.read
    assert (read.key, read.read, read.local) == ("data.path", "local", str(local))
    assert bundle.report.sources == (str(local),)
    assert len(bundle.train) == 16 and len(bundle.eval) == 4


def test_local_copy_absent_reads_the_hub_split_with_its_arguments(tmp_path, fake_tokenizer):
    local = write_gz(tmp_path / "test.jsonl.gz", HH_LIKE)
    here = build_data(DataSpec(**HH_SPEC, path=str(local), hub=HUB), fake_tokenizer, seed=0)
    seen: list = []
    spec = DataSpec(**HH_SPEC, path=str(tmp_path / "absent.jsonl.gz"), hub={**HUB, "revision": "abc123"})
    there = build_data(spec, fake_tokenizer, seed=0, hub_loader=from_rows(HH_LIKE, seen))
    assert seen == [("org/hh-like", {"name": None, "data_dir": "helpful-base", "split": "test", "revision": "abc123"})]
    assert there.train == here.train and there.eval == here.eval  # the same rows, rendered the same way
    (read,) = there.report.read
    absent = str(tmp_path / "absent.jsonl.gz")
    assert (read.read, read.hub, read.split, read.local) == ("hub", "org/hh-like", "test", absent)
    assert there.report.sources == ("org/hh-like (data_dir helpful-base, split test, revision abc123)",)
    recorded = there.report.to_dict()["read"]  # what meta.json holds
    assert recorded[0]["read"] == "hub" and recorded[0]["data_dir"] == "helpful-base"
    json.dumps(recorded)


def test_a_real_hub_call_reads_a_dataset_folder_as_datasets_would(tmp_path, fake_tokenizer, monkeypatch):
    """datasets.load_dataset itself, on a folder laid out as the hub repository is (no network needed)."""
    write_gz(tmp_path / "org" / "hh-like" / "helpful-base" / "test.jsonl.gz", HH_LIKE)
    write_gz(tmp_path / "org" / "hh-like" / "helpful-base" / "train.jsonl.gz", HH_LIKE[:3])
    monkeypatch.chdir(tmp_path)
    local = write_gz(tmp_path / "copy" / "test.jsonl.gz", HH_LIKE)
    here = build_data(DataSpec(**HH_SPEC, path=str(local), hub=HUB), fake_tokenizer, seed=0)
    there = build_data(DataSpec(**HH_SPEC, path="absent/test.jsonl.gz", hub=HUB), fake_tokenizer, seed=0)
    assert there.report.read[0].read == "hub"
    assert there.train == here.train and there.eval == here.eval


def test_local_copy_absent_and_hub_unreachable_is_one_line_naming_both(tmp_path, fake_tokenizer):
    local = str(tmp_path / "shared" / "test.jsonl.gz")
    with pytest.raises(DataError) as err:
        build_data(DataSpec(**HH_SPEC, path=local, hub=HUB), fake_tokenizer, seed=0, hub_loader=offline)
    text = str(err.value)
    assert text.startswith(f"{local}: no such file or folder (data.path), and the dataset hub did not serve "
                           "org/hh-like (data_dir helpful-base, split test)")
    assert "OfflineModeIsEnabled" in text and "\n" not in text


def test_eval_path_falls_back_to_the_eval_split(tmp_path, fake_tokenizer):
    rows = [{"text": f"sentence {i}", "label": i % 2} for i in range(10)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list = []
    spec = DataSpec(format="classification", path=str(train), eval_path=str(tmp_path / "dev.tsv"),
                    hub={"id": "nyu-mll/glue", "config": "sst2", "eval_split": "validation"})
    bundle = build_data(spec, fake_tokenizer, seed=0, task="sequence_classification",
                        hub_loader=from_rows(rows[:4], seen))
    assert [r.read for r in bundle.report.read] == ["local", "hub"]
    assert seen == [("nyu-mll/glue", {"name": "sst2", "data_dir": None, "split": "validation", "revision": None})]
    assert len(bundle.train) == 10 and len(bundle.eval) == 4


def test_hub_only_and_bare_hub_ids(tmp_path):
    hub_only = choose_sources(DataSpec(format="chat", hub={"id": "org/chats", "eval_split": "test"}), tmp_path)
    assert [(r.key, r.read, r.split, r.local) for r in hub_only] == [("data.path", "hub", "train", None),
                                                                       ("data.eval_path", "hub", "test", None)]
    (bare,) = choose_sources(DataSpec(format="chat", path="org/chats"), tmp_path)
    assert (bare.read, bare.hub, bare.split) == ("hub", "org/chats", "train")
    (tmp_path / "org" / "chats").mkdir(parents=True)
    (folder,) = choose_sources(DataSpec(format="chat", path="org/chats"), tmp_path)
    assert folder.read == "local"  # a folder of that name wins, as any local copy does
    (builtin,) = choose_sources(DataSpec(format="chat", path="builtin:person-extraction"), tmp_path)
    assert builtin.read == "builtin"


def test_a_bare_hub_id_offline_names_it(tmp_path, fake_tokenizer):
    with pytest.raises(DataError) as err:
        build_data(DataSpec(format="chat", path="someone/some-dataset"), fake_tokenizer, seed=0, base_dir=tmp_path,
                   hub_loader=offline)
    assert str(err.value).startswith("someone/some-dataset: not a local file or folder, and the dataset hub did not "
                                     "serve someone/some-dataset (split train) (Couldn't reach")


def test_describe_says_what_stands_in_for_what(tmp_path):
    read = choose("data.path", "/nowhere/d.jsonl", HubSource(id="org/d", config="main"), "train", tmp_path)
    assert read.describe() == "data.path: hub dataset org/d (config main, split train) in place of /nowhere/d.jsonl " \
                              "(absent here)"


# ---- the shipped recipes


@pytest.mark.parametrize("file", SHIPPED, ids=lambda f: str(f.relative_to(RECIPES)))
def test_every_shipped_recipe_names_a_hub_source_unless_builtin(file):
    data = load_recipe(file).data
    pairs = [(data.path, data.hub), (data.eval_path, data.hub), *((m.path, m.hub) for m in data.mix)]
    for source, hub in pairs:
        if source is None or source.startswith("builtin:"):
            continue
        bare_id = HUB_DATASET_ID.fullmatch(source) and not (file.parent / source).exists()
        assert hub is not None or bare_id, f"{file.name}: {source} has no public source (hub)"


@pytest.mark.parametrize("file", SHIPPED, ids=lambda f: str(f.relative_to(RECIPES)))
def test_in_a_clone_without_shared_data_every_source_is_the_hub_or_builtin(file, tmp_path, monkeypatch):
    """A user's clone: the recipe as shipped, but ../../shared/data is not next to it. Preflight reads no network
    and reports what the run will fetch."""
    clone = tmp_path / "home" / "me" / "peftkit" / "recipes"
    clone.mkdir(parents=True)
    (clone / file.name).write_text(file.read_text())
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(clone / file.name)
    reads = choose_sources(recipe.data, tmp_path)
    assert {r.read for r in reads} <= {"hub", "builtin"}
    raw = recipe.model_dump(mode="json")
    raw["model"]["base"], raw["adapter"]["init_from"] = "org/some-model", None  # preflight reads no base or adapter
    report = preflight(recipe_from_dict(raw), tmp_path / "run", resume=False)
    assert report.hub_sources == tuple(r.describe() for r in reads if r.read == "hub")
    assert all("(absent here)" in line for line in report.hub_sources if "shared/data" in line)


def test_sst2_hub_rows_build_like_the_glue_tsv(tmp_path, fake_tokenizer):
    """The recipe's own data keys on GLUE TSV text (labels "0"/"1") and on the hub's rows (int labels, an idx
    column): the same examples."""
    spec = load_recipe(RECIPES / "minilm-lora-sst2.yaml").data
    rows = [(f"sentence {i} ", i % 2) for i in range(12)]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows[:8]))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows[8:]))
    hub = {"train": rows[:8], "validation": rows[8:]}

    def glue(dataset_id, *, name, split, **kw):
        assert (dataset_id, name) == ("nyu-mll/glue", "sst2")
        return [{"sentence": s, "label": y, "idx": i} for i, (s, y) in enumerate(hub[split])]

    def build(path, eval_path):
        local = spec.model_copy(update={"path": str(path), "eval_path": str(eval_path), "limit": None})
        return build_data(local, fake_tokenizer, seed=0, task="sequence_classification", hub_loader=glue)

    here, there = build(tmp_path / "train.tsv", tmp_path / "dev.tsv"), build(tmp_path / "a.tsv", tmp_path / "b.tsv")
    assert [r.read for r in there.report.read] == ["hub", "hub"]
    assert there.train == here.train and there.eval == here.eval and there.label_names == ("negative", "positive")


# ---- through the CLI


def _recipe(tmp_path: Path, hub_id: str) -> Path:
    from support.tiny_run import write_base, write_chat

    base = write_base(tmp_path / "base")
    (tmp_path / "org" / "chats").mkdir(parents=True)  # laid out as the hub repository: datasets reads it offline
    write_chat(tmp_path / "org" / "chats" / "train.jsonl", n=20)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {{base: {base}}}\ndata:\n  format: chat\n  path: shared/chat.jsonl\n"
                      f"  hub: {{id: {hub_id}}}\n  eval_fraction: 0.2\n")
    return recipe


def test_data_stats_reads_the_hub_in_place_of_an_absent_copy_and_says_so(tmp_path, monkeypatch, capsys):
    from peftkit.cli import main

    recipe = _recipe(tmp_path, "org/chats")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "stats", str(recipe), "--json"]) == 0
    out, err = capsys.readouterr()
    read = json.loads(out)["report"]["read"]
    assert [(r["read"], r["hub"], r["split"]) for r in read] == [("hub", "org/chats", "train")]
    assert f"data.path: hub dataset org/chats (split train) in place of {tmp_path}/shared/chat.jsonl (absent here)" \
        in err


def test_data_stats_offline_is_one_line_naming_both(tmp_path):
    """In a child process, so that the offline switches are set before datasets is imported."""
    recipe = _recipe(tmp_path, "org/elsewhere")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "peftkit", "data", "stats", str(recipe)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"{tmp_path}/shared/chat.jsonl: no such file or folder (data.path), and the dataset hub did not serve " \
           "org/elsewhere (split train) (Couldn't reach 'org/elsewhere' on the Hub" in line


def test_a_mixed_source_falls_back_to_its_own_hub_dataset(tmp_path, fake_tokenizer):
    local = write_gz(tmp_path / "test.jsonl.gz", HH_LIKE)
    seen: list = []
    spec = DataSpec(**HH_SPEC, path=str(local), mix=[{"path": "absent.jsonl", "hub": {"id": "org/more"}, "limit": 5}])
    bundle = build_data(spec, fake_tokenizer, seed=0, base_dir=tmp_path, hub_loader=from_rows(HH_LIKE, seen))
    assert [(r.key, r.read) for r in bundle.report.read] == [("data.path", "local"), ("data.mix.0.path", "hub")]
    assert [s[0] for s in seen] == ["org/more"] and len(bundle.train) == 16 + 5
