"""Three finished tiny runs on one local 2-layer Llama (trained once per session, a few seconds each), and a
pool serving the first two."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.tiny_run import tiny_recipe, write_base, write_chat, write_long_chat

import peftkit
from peftkit.serving.pool import open_pool


def _train(root: Path, name: str, data: Path, *, lr: float, seed: int, metrics=("loss",)) -> Path:
    base = root / "base"
    if not base.exists():
        write_base(base)
    run = root / name
    peftkit.train(tiny_recipe(base, data, run, train={"max_steps": 3, "lr": lr, "seed": seed},
                              eval={"before": False, "metrics": list(metrics)}))
    return run


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    sums, counts = write_chat(root / "sums.jsonl"), write_long_chat(root / "counts.jsonl")
    # the adder's recipe generates in eval (exact_match): `peftkit eval` predictions to compare the server with
    return {"adder": _train(root, "adder", sums, lr=5e-2, seed=0, metrics=("loss", "exact_match")),
            "counter": _train(root, "counter", counts, lr=5e-2, seed=1),
            "third": _train(root, "third", sums, lr=2e-2, seed=2)}


@pytest.fixture(scope="session")
def pool(runs):
    return open_pool([str(runs["adder"]), str(runs["counter"])])
