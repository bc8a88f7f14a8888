"""Two CPU processes under torchrun (gloo), the way `accelerate launch` / torchrun run a recipe on two GPUs:
the same adapter, losses and token totals as one process with grad_accum=2; a run killed with SIGKILL resumes
to the uninterrupted result; SIGTERM to one process stops both at the same step; one writer per file."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file
from support.tiny_run import tiny_recipe, write_base, write_chat, write_pairs

from peftkit.recipe import recipe_to_yaml
from peftkit.training.checkpoint import latest_valid, list_checkpoints

STEPS = 40  # long enough that a kill lands mid-run
EVERY = 10


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "-m", "peftkit", "train", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _run(args: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    if processes == 1:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        return subprocess.run([sys.executable, "-m", "peftkit", "train", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
    p = _torchrun(args, cwd)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _recipe(root: Path, name: str, **train) -> Path:
    base, data = root / "base", root / "chat.jsonl"
    if not base.exists():
        write_base(base), write_chat(data)
    r = tiny_recipe(base, data, root / f"run-{name}", train={"max_steps": STEPS, **train})
    path = root / f"{name}.yaml"
    path.write_text(recipe_to_yaml(r))
    return path


def _adapter(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One uninterrupted two-process run (grad_accum 1, checkpoints every EVERY steps), shared by the tests below."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = _recipe(root, "two", grad_accum=1, checkpoint_every=EVERY)
    done = _run([str(recipe), "--force"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, root / "run-two", done


def test_two_processes_equal_one_with_twice_the_accumulation(two_process_run):
    root, two, _ = two_process_run
    recipe = _recipe(root, "one", grad_accum=2, checkpoint_every=EVERY)
    done = _run([str(recipe), "--force"], root, processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    one = root / "run-one"
    assert _max_diff(_adapter(one), _adapter(two)) <= 1e-5
    m1, m2 = (json.loads((r / "metrics.json").read_text())["train"] for r in (one, two))
    assert m2["steps"] == m1["steps"] == STEPS
    assert (m2["tokens"], m2["trained_tokens"]) == (m1["tokens"], m1["trained_tokens"])
    for a, b in zip(m1["loss_curve"], m2["loss_curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and a["tokens"] == b["tokens"]
    meta = json.loads((two / "meta.json").read_text())
    assert meta["num_processes"] == 2 and meta["distributed"] == "MULTI_CPU"


def test_one_writer_per_file(two_process_run):
    _, two, done = two_process_run
    everything = [p for p in two.rglob("*")]
    leftovers = [p for p in everything if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    assert [p.name for p in everything if p.name == "meta.json"] == ["meta.json"]
    ckpts = list_checkpoints(two / "checkpoints")
    assert [c.name for c in ckpts] == ["step-000030", "step-000040"]  # keep_checkpoints 2
    for c in ckpts:
        assert (c / "rng.pt").is_file() and (c / "rng-rank1.pt").is_file()  # each process its own RNG state
    assert latest_valid(two / "checkpoints")[0] == ckpts[-1]
    assert done.stdout.count(str(two)) == 1  # only the main process reports


def _wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not list(path_glob.glob(pattern)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {pattern} in {path_glob} after {timeout}s"
        time.sleep(0.2)


def test_sigkill_then_resume_equals_the_uninterrupted_run(two_process_run, tmp_path):
    root, two, _ = two_process_run
    recipe = _recipe(root, "killed", grad_accum=1, checkpoint_every=EVERY)
    killed = root / "run-killed"
    p = _torchrun([str(recipe), "--force"], root)
    _wait_for(killed / "checkpoints", "step-000010", p)
    for proc in [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]:
        proc.kill()  # the workers and the launcher, no chance to clean up (SIGKILL)
    p.communicate()
    assert not (killed / "metrics.json").exists()
    done = _run(["--resume", str(killed)], root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    assert _max_diff(_adapter(killed), _adapter(two)) <= 1e-6
    a, b = (json.loads((r / "metrics.json").read_text())["train"] for r in (killed, two))
    assert (a["tokens"], a["trained_tokens"]) == (b["tokens"], b["trained_tokens"])
    assert [c["loss"] for c in a["loss_curve"]] == pytest.approx([c["loss"] for c in b["loss_curve"]], abs=1e-6)


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    recipe = _recipe(tmp_path, "stopped", grad_accum=1, checkpoint_every=EVERY, max_steps=2000)
    run = tmp_path / "run-stopped"
    p = _torchrun([str(recipe), "--force"], tmp_path)
    _wait_for(run / "checkpoints", "step-000010", p)
    workers = [c for c in psutil.Process(p.pid).children(recursive=True) if "peftkit" in " ".join(c.cmdline())]
    assert len(workers) == 2
    workers[1].send_signal(signal.SIGTERM)  # one rank only, as a scheduler preempting one task would
    _, err = p.communicate(timeout=240)
    assert p.returncode != 0
    steps = {int(s) for s in re.findall(r"at step (\d+): checkpoint written", err)}
    assert len(steps) == 1, err[-3000:]  # both processes name the same step
    (step,) = steps
    assert 10 <= step < 2000
    assert "SIGTERM" in err and "stop requested by another process" in err
    newest, meta = latest_valid(run / "checkpoints")
    assert meta["fit"]["step"] == step and (newest / "rng-rank1.pt").is_file()


def test_dpo_in_two_processes_equals_one_with_twice_the_accumulation(tmp_path):
    """Pair-weighted loss, reward stats summed over processes, and the precomputed reference table built from
    every process's batches: the same run as one process accumulating both halves."""
    base, pairs = write_base(tmp_path / "base"), write_pairs(tmp_path / "pairs.jsonl")
    paths = {}
    for name, accum in (("two", 1), ("one", 2)):
        r = tiny_recipe(base, pairs, tmp_path / f"run-{name}", data={"format": "preference"},
                        train={"objective": "dpo", "max_steps": 6, "grad_accum": accum, "precompute_ref": True},
                        eval={"metrics": ["loss"]})
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(recipe_to_yaml(r))
    for name, processes in (("two", 2), ("one", 1)):
        done = _run([str(paths[name]), "--force"], tmp_path, processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "run-one", tmp_path / "run-two"
    assert _max_diff(_adapter(one), _adapter(two)) <= 1e-5
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    for a, b in zip(m1["train"]["loss_curve"], m2["train"]["loss_curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a["reward_margin"] - b["reward_margin"]) <= 1e-5
        assert a["reward_accuracy"] == b["reward_accuracy"] and a["trained_tokens"] == b["trained_tokens"]
    assert abs(m1["eval"]["after"]["reward_margin"] - m2["eval"]["after"]["reward_margin"]) <= 1e-5
    assert (two / "reference_logps.safetensors").is_file()
