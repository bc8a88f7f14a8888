"""train() end to end on a tiny local model: run-directory contents, refusal to overwrite, checkpoints,
resume after SIGKILL, SIGINT, corrupt checkpoints, disk full."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from support.tiny_run import tiny_recipe, write_base, write_chat
from transformers import AutoModelForCausalLM

import peftkit
from peftkit.hardware import detect
from peftkit.training.choices import resolve_precision
from peftkit.errors import RunDirError, TrainingAborted
from peftkit.recipe import recipe_to_yaml
from peftkit.training import checkpoint as ckpt_mod


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_base(root / "base"), write_chat(root / "chat.jsonl")


def test_run_directory_is_self_describing(assets, tmp_path):
    base, data = assets
    result = peftkit.train(tiny_recipe(base, data, tmp_path / "run"))
    run = result.run_dir
    files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert {"recipe.yaml", "meta.json", "metrics.json", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors", "adapter/tokenizer.json"} <= files
    assert not any(f.startswith("checkpoints") for f in files)  # none asked for
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["eval"]["before"]) == set(metrics["eval"]["after"]) == {"loss", "exact_match"}
    assert metrics["eval"]["after"]["loss"] < metrics["eval"]["before"]["loss"]
    train = metrics["train"]
    for key in ("tokens_per_s", "trained_tokens", "wall_s", "peak_memory_mb", "loss_curve"):
        assert key in train
    assert train["steps"] == 6 and len(train["loss_curve"]) == 6 and train["trained_tokens"] > 0
    meta = json.loads((run / "meta.json").read_text())
    assert meta["base"]["fingerprint"].startswith("sha256-sampled:")
    assert meta["versions"]["torch"] and meta["params"]["trainable"] > 0
    assert [(r["key"], r["read"], r["local"]) for r in meta["data"]["read"]] == [("data.path", "local", str(data))]
    # the recipe as it ran: every `auto` precision replaced by this machine's choice, recorded with its reason
    hw = detect()
    resolved, precision = resolve_precision(tiny_recipe(base, data, tmp_path / "run"), hw)
    written = peftkit.load_recipe(run / "recipe.yaml")
    assert meta["precision"] == precision.to_dict() and written.model.dtype == resolved.model.dtype != "auto"
    assert written.train.gradient_checkpointing is meta["gradient_checkpointing"]["enabled"]
    assert written.data.packing is meta["packing"] and written.model.attn_implementation in ("eager", "sdpa")
    for section in ("adapter", "eval", "output"):
        assert getattr(written, section) == getattr(resolved, section)

    # the adapter is plain PEFT: it loads on the base and changes its output
    plain = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = plain(ids).logits
        after = PeftModel.from_pretrained(plain, run / "adapter")(ids).logits
    assert not torch.allclose(before, after)


def test_refuses_to_overwrite_a_finished_run(assets, tmp_path):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 1})
    peftkit.train(recipe)
    stamp = (tmp_path / "run" / "metrics.json").read_text()
    with pytest.raises(RunDirError, match="not empty"):
        peftkit.train(recipe)
    assert (tmp_path / "run" / "metrics.json").read_text() == stamp
    peftkit.train(recipe, force=True)


def _cli(recipe_file: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peftkit", "train", str(recipe_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _write(recipe, path: Path) -> Path:
    path.write_text(recipe_to_yaml(recipe))
    return path


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_equals_uninterrupted(assets, tmp_path):
    base, data = assets
    steps = 60  # long enough that the child is still training when the kill lands
    sections = dict(train={"max_steps": steps, "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 5},
                    eval={"metrics": ["loss"], "before": False})
    full = peftkit.train(tiny_recipe(base, data, tmp_path / "full", **sections))

    recipe = tiny_recipe(base, data, tmp_path / "killed", **sections)
    kill_after = random.Random(os.getpid()).randint(2, 20)
    proc = _cli(_write(recipe, tmp_path / "r.yaml"))
    root = tmp_path / "killed" / "checkpoints"
    end = time.time() + 120
    # older checkpoints are pruned (keep 2), so wait for any checkpoint at or past the chosen step
    while not any(int(p.name[5:]) >= kill_after for p in ckpt_mod.list_checkpoints(root)):
        assert proc.poll() is None, f"the run ended before step {kill_after}: {proc.communicate()}"
        assert time.time() < end, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = peftkit.train(recipe, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from >= kill_after
    a = load_file(full.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    curve_a = full.metrics.train.loss_curve
    curve_b = resumed.metrics.train.loss_curve
    assert [c["step"] for c in curve_a] == [c["step"] for c in curve_b]
    for x, y in zip(curve_a, curve_b):
        assert abs(x["loss"] - y["loss"]) <= 1e-6


def test_sigint_writes_a_resumable_checkpoint(assets, tmp_path):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 400, "checkpoint_every": 100},
                         eval={"metrics": ["loss"], "before": False})
    proc = _cli(_write(recipe, tmp_path / "r.yaml"))
    _wait_for(tmp_path / "run" / "meta.json", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == TrainingAborted.exit_code
    assert "resume with: peftkit train --resume" in err and "Traceback" not in err
    ckpts = ckpt_mod.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert ckpts and ckpt_mod.latest_valid(tmp_path / "run" / "checkpoints")[0] == ckpts[-1]


def test_corrupt_newest_checkpoint_falls_back_with_warning(assets, tmp_path):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 4, "checkpoint_every": 2},
                         eval={"metrics": ["loss"], "before": False})
    peftkit.train(recipe)
    root = tmp_path / "run" / "checkpoints"
    newest = ckpt_mod.list_checkpoints(root)[-1]
    with open(newest / "optimizer.pt", "r+b") as fh:  # truncated mid-write by a crash
        fh.truncate(10)
    with pytest.warns(UserWarning, match="incomplete or corrupt"):
        found = ckpt_mod.latest_valid(root)
    assert found[0].name == "step-000002"
    result = peftkit.train(recipe, resume=True)
    assert result.resumed_from == 2


def test_disk_full_while_checkpointing_keeps_the_previous_one(assets, tmp_path, monkeypatch):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 4, "checkpoint_every": 2},
                         eval={"metrics": ["loss"], "before": False})
    real = ckpt_mod.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(tensors, filename)

    monkeypatch.setattr(ckpt_mod, "save_file", full_disk)
    with pytest.raises(TrainingAborted, match="No space left on device"):
        peftkit.train(recipe)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpt_mod.list_checkpoints(root)] == ["step-000002"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no half-written leftovers
    assert ckpt_mod.latest_valid(root)[0].name == "step-000002"


def test_resume_without_checkpoint_is_one_line(assets, tmp_path):
    base, data = assets
    with pytest.raises(RunDirError, match="no valid checkpoint"):
        peftkit.train(tiny_recipe(base, data, tmp_path / "nothing"), resume=True)


def test_data_report_and_metrics_count_trained_tokens_alike(assets, tmp_path):
    """One epoch exactly (18 training rows, 3 steps of 6): meta.json's data report and metrics.json's training
    totals are the same count (peftkit.modeling.tokens.trained_tokens), over the same rows."""
    base, data = assets
    result = peftkit.train(tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 3, "batch_size": 6},
                                       eval={"before": False}))
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["data"]["train"]["examples"] == 18
    assert meta["data"]["train"]["trained_tokens"] == result.metrics.train.trained_tokens > 0
    assert meta["data"]["train"]["tokens"] == result.metrics.train.tokens
