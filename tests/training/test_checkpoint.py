"""Checkpoint round trip: weights, optimizer, scheduler, gradient scaler and RNG come back exactly."""

import random

import numpy as np
import torch

from peftkit.recipe.schema import TrainSpec
from peftkit.training.checkpoint import latest_valid, load_checkpoint, save_checkpoint
from peftkit.training.loop import FitState
from peftkit.training.optim import build_optimizer, build_scheduler


class Scaler:
    """Stands in for accelerate's fp16 GradScaler: only its state dict matters here."""

    def __init__(self, scale: float):
        self.state = {"scale": scale, "growth_tracker": 3}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


def setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    spec = TrainSpec(max_steps=10, warmup_steps=2)
    opt = build_optimizer(list(model.parameters()), spec)
    return model, opt, build_scheduler(opt, spec)


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = setup(0)
    model(torch.ones(2, 4)).sum().backward()
    opt.step(), sched.step()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    state = FitState(step=1, micro_batches=1, tokens=8, curve=[{"step": 1, "loss": 0.5}])
    save_checkpoint(tmp_path, model, opt, sched, state, extra={"before": {"loss": 1.0}}, keep=2, scaler=Scaler(1024.0))
    expected = (random.random(), np.random.rand(), torch.rand(1))

    other, opt2, sched2 = setup(1)
    scaler = Scaler(1.0)
    ckpt, meta = latest_valid(tmp_path)
    got_state, extra = load_checkpoint(ckpt, meta, other, opt2, sched2, scaler)
    assert got_state == state and extra == {"before": {"loss": 1.0}}
    assert scaler.state == {"scale": 1024.0, "growth_tracker": 3}
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    assert sched2.state_dict() == sched.state_dict()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_keeps_only_the_newest(tmp_path):
    model, opt, sched = setup(0)
    for step in range(1, 5):
        save_checkpoint(tmp_path, model, opt, sched, FitState(step=step), extra={}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]
