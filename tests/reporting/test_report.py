"""peftkit report: two tiny runs (SFT and DPO) into one self-contained page, opened in headless Chromium."""

import json
import re

import pytest
from support.browser import browser_page
from support.tiny_run import tiny_recipe, write_base, write_chat, write_pairs

import peftkit
from peftkit import cli
from peftkit.recipe import recipe_to_yaml
from peftkit.reporting import load_run, render, write_report
from peftkit.reporting.health import health
from peftkit.reporting.runs import RunView


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    base, chat, pairs = write_base(root / "base"), write_chat(root / "chat.jsonl"), write_pairs(root / "pairs.jsonl")
    sft = peftkit.train(tiny_recipe(base, chat, root / "sft", train={"max_steps": 6})).run_dir
    dpo = peftkit.train(tiny_recipe(base, pairs, root / "dpo", data={"format": "preference"},
                                    train={"objective": "dpo", "max_steps": 4}, eval={"metrics": ["loss"]})).run_dir
    return sft, dpo


def test_the_page_is_self_contained(runs, tmp_path):
    out = write_report(list(runs), tmp_path / "both.html")
    text = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from the network
    assert "<script" not in text
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)
    for title in ("Training loss", "Learning rate", "Gradient norm", "Throughput", "Peak memory",
                  "Preference: reward margin", "Preference: reward accuracy"):
        assert any(t.startswith(title) for t in images), (title, images)
    assert 'id="eval-table"' in text and "gradient checkpointing" in text and "trained share" in text
    assert text.count('class="swatch"') >= 4  # each run's colour in the legend and its heading


def test_the_report_opens_in_chromium(runs, tmp_path):
    out = write_report(list(runs), tmp_path / "both.html")
    with browser_page() as (page, errors):
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        rows = page.eval_on_selector_all("#eval-table tr", "rows => rows.map(r => r.innerText)")
        title = page.title()
    assert not errors, errors
    assert len(widths) >= 7 and all(w > 0 for w in widths), widths  # every plot decoded
    assert any(r.startswith("sft\tloss") for r in rows) and any(r.startswith("dpo\treward_accuracy") for r in rows)
    assert title == "peftkit report: sft, dpo" and shot.stat().st_size > 20_000


def test_peftkit_train_writes_report_html_and_a_failed_report_keeps_the_run(runs, tmp_path, monkeypatch):
    sft = load_run(runs[0])
    recipe = peftkit.load_recipe(sft.path / "recipe.yaml", [f"output.dir={tmp_path / 'run'}", "train.max_steps=2"])
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
    assert cli.main(["train", str(tmp_path / "r.yaml")]) == 0
    assert "Training loss" in (tmp_path / "run" / "report.html").read_text()

    def broken(*a, **k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("peftkit.reporting.write_report", broken)
    assert cli.main(["train", str(tmp_path / "r.yaml"), "--force"]) == 0
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run / "report.html").exists()


def test_report_command_writes_where_told(runs, tmp_path):
    assert cli.main(["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 10_000
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2  # one line, no traceback


def test_health_flags_spikes_explosions_and_nonfinite_skips(runs):
    sft = load_run(runs[0])
    curve = [{"step": s, "loss": 1.0, "grad_norm": 0.5} for s in range(1, 9)]
    curve[5] = {"step": 6, "loss": 4.0, "grad_norm": 9.0}
    spiky = RunView(name="x", path=sft.path, curve=tuple(curve), meta=sft.meta, recipe={},
                    metrics=sft.metrics.model_copy(update={"train": sft.metrics.train.model_copy(
                        update={"skipped_nonfinite": 2})}), eval_record=None)
    texts = [f.text for f in health(spiky)]
    assert any(t.startswith("loss spike at step 6") for t in texts), texts
    assert any(t.startswith("gradient norm explosion at step 6") for t in texts), texts
    assert any(t.startswith("2 step(s) skipped for a NaN/inf") for t in texts), texts
    assert [f.level for f in health(sft)][0] == "ok"


def _copy(run, to, names):
    to.mkdir()
    for name in names:
        (to / name).write_text((run / name).read_text())
    return to


def test_a_run_still_training_renders(runs, tmp_path):
    """No metrics.json yet: the curve from curve.jsonl, eval 'not yet'."""
    view = load_run(_copy(runs[0], tmp_path / "live", ("recipe.yaml", "meta.json", "curve.jsonl")))
    assert not view.finished and len(view.curve) == 6
    text = render([view])
    assert "Training loss" in text and "No eval yet" in text and "training in progress" in text


def test_old_runs_without_curve_jsonl_use_metrics_json(runs, tmp_path):
    old = _copy(runs[0], tmp_path / "old", ("recipe.yaml", "meta.json", "metrics.json"))
    view = load_run(old)
    curve = json.loads((old / "metrics.json").read_text())["train"]["loss_curve"]
    assert [r["loss"] for r in view.curve] == [r["loss"] for r in curve]
    assert all(r["tokens_per_s"] > 0 for r in view.curve[1:])
