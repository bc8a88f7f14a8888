"""train.report_to and curve.jsonl: a tiny run logged to TensorBoard, read back with TensorBoard's own reader."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from support.tiny_run import tiny_recipe, write_base, write_chat, write_pairs

import peftkit
from peftkit.errors import PeftkitError
from peftkit.rundir import read_curve
from peftkit.training.runlog import check_report_to


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_base(root / "base"), write_chat(root / "chat.jsonl"), write_pairs(root / "pairs.jsonl")


def _scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_equal_the_metrics_curve(assets, tmp_path):
    base, chat, _ = assets
    recipe = tiny_recipe(base, chat, tmp_path / "run", train={"max_steps": 5, "log_every": 2,
                                                              "report_to": ["tensorboard"]})
    run = peftkit.train(recipe).run_dir
    curve = json.loads((run / "metrics.json").read_text())["train"]["loss_curve"]
    assert [r["step"] for r in curve] == [1, 2, 4, 5]
    events = list((run / "logs" / "tiny").glob("events.out.tfevents.*"))
    assert events, sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    scalars = _scalars(run / "logs" / "tiny")
    loss = scalars["train/loss"]
    assert [s for s, _ in loss] == [r["step"] for r in curve]
    assert [v for _, v in loss] == pytest.approx([r["loss"] for r in curve], rel=1e-5)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([r["lr"] for r in curve], rel=1e-5)
    assert [v for _, v in scalars["train/grad_norm"]] == pytest.approx([r["grad_norm"] for r in curve], rel=1e-5)
    for tag in ("train/tokens_per_s", "train/total_trained_tokens", "train/memory_mb"):
        assert len(scalars[tag]) == len(curve), tag
    ev = json.loads((run / "metrics.json").read_text())["eval"]
    assert scalars["eval_before/loss"] == [(0, pytest.approx(ev["before"]["loss"], rel=1e-5))]
    assert scalars["eval_after/loss"] == [(5, pytest.approx(ev["after"]["loss"], rel=1e-5))]
    # the resolved recipe as hyper-parameters (Accelerate keeps a copy beside the events)
    hparams = yaml.safe_load(next((run / "logs" / "tiny").rglob("hparams.yml")).read_text())
    assert hparams["train.max_steps"] == 5 and hparams["adapter.rank"] == 4 and hparams["name"] == "tiny"
    # curve.jsonl: metrics.json's rows plus what the report and dashboard plot
    rows = read_curve(run)
    assert [{k: r[k] for k in curve[0]} for r in rows] == curve
    assert all(r["tokens_per_s"] > 0 and r["memory_mb"] > 0 for r in rows)


def test_preference_stats_reach_the_tracker(assets, tmp_path):
    base, _, pairs = assets
    recipe = tiny_recipe(base, pairs, tmp_path / "run", data={"format": "preference"},
                         train={"objective": "dpo", "max_steps": 2, "report_to": ["tensorboard"]},
                         eval={"metrics": ["loss"]})
    run = peftkit.train(recipe).run_dir
    scalars = _scalars(run / "logs" / "tiny")
    for tag in ("train/reward_margin", "train/reward_accuracy", "eval_after/reward_accuracy"):
        assert tag in scalars, sorted(scalars)
    assert "reward_margin" in read_curve(run)[-1]


def test_no_report_to_writes_no_logs(assets, tmp_path):
    base, chat, _ = assets
    run = peftkit.train(tiny_recipe(base, chat, tmp_path / "run", train={"max_steps": 2})).run_dir
    assert not (run / "logs").exists() and len(read_curve(run)) == 2


def test_a_missing_tracker_package_is_one_line_naming_the_extra():
    with pytest.raises(PeftkitError) as exc:
        check_report_to(("tensorboard", "wandb"))  # wandb is not installed here
    assert str(exc.value) == "train.report_to: wandb is not installed (pip install 'peftkit[wandb]')"


def test_trackio_logs_offline_to_its_local_store(assets, tmp_path):
    """trackio reads TRACKIO_DIR when imported: its own process, storing under tmp_path, read back with its own
    storage reader."""
    base, chat, _ = assets
    script = (
        "import json, sys, peftkit\n"
        "sys.path.insert(0, 'tests')\n"
        "from support.tiny_run import tiny_recipe\n"
        f"r = tiny_recipe({str(base)!r}, {str(chat)!r}, {str(tmp_path / 'run')!r}, "
        "train={'max_steps': 3, 'report_to': ['trackio']})\n"
        "peftkit.train(r)\n"
        "from trackio.sqlite_storage import SQLiteStorage\n"
        "logs = SQLiteStorage.get_logs('tiny', 'run')\n"
        "config = SQLiteStorage.get_run_config('tiny', 'run') or {}\n"
        "print('RESULT', json.dumps({'loss': [[g.get('step'), g['train/loss']] for g in logs if 'train/loss' in g],"
        " 'rank': config.get('adapter.rank')}))\n"
    )
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    curve = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["loss_curve"]
    assert got["loss"] == [[r["step"], pytest.approx(r["loss"], rel=1e-6)] for r in curve]
    assert got["rank"] == 4
