"""peftkit eval: base vs adapter on the same held-out rows, one table, refusal on a foreign base."""

import json

import pytest
from support.tiny_run import tiny_recipe, write_base, write_chat

import peftkit
from peftkit.cli import main
from peftkit.errors import ModelError
from peftkit.evaluation.compare import evaluate_models, write_table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    base, data = write_base(root / "base"), write_chat(root / "chat.jsonl")
    recipe = tiny_recipe(base, data, root / "run", train={"max_steps": 12})
    return peftkit.train(recipe)


def test_base_and_adapter_scored_on_the_same_examples(run, tmp_path):
    table = evaluate_models([str(run.run_dir)])
    assert [r.kind for r in table.rows] == ["base", "adapter"]
    base, adapter = table.rows
    assert set(base.metrics) == set(adapter.metrics) == {"loss", "exact_match"}
    # the table reproduces what training measured, on the same examples
    assert adapter.metrics["loss"] == pytest.approx(run.metrics.eval.after["loss"], rel=1e-4)
    assert base.metrics["loss"] == pytest.approx(run.metrics.eval.before["loss"], rel=1e-4)
    assert table.examples == run.metrics.eval.examples
    assert table.samples and set(table.samples[0]["predictions"]) == {"base", str(run.run_dir)}
    js, md = write_table(table, tmp_path)
    assert json.loads(js.read_text())["rows"][1]["kind"] == "adapter"
    assert "| base | base |" in md.read_text()


def test_adapter_on_a_different_base_is_refused(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["base"]["fingerprint"] = "sha256-sampled:0000"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="sha256-sampled:0000"):
        evaluate_models([str(copy)])


def test_cli_eval_json(run, capsys):
    assert main(["eval", str(run.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in out["rows"]] == ["base", "adapter"]
    assert (run.run_dir / "eval.md").is_file()
