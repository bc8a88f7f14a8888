"""peftkit.train with train.privacy on a tiny local model: epsilon per logged step and in metrics.json, meta.json
and the adapter card equals Opacus's accountant for the run's (q, sigma, steps); a resumed run ends with the same
accountant state, epsilon and weights as an uninterrupted one; settings that would break the guarantee are refused
in one line."""

import json
from types import SimpleNamespace

import pytest
import torch
from opacus.accountants import RDPAccountant
from safetensors.torch import load_file
from support.tiny_run import tiny_recipe, write_base, write_chat

import peftkit
from peftkit.artifacts.card import adapter_card
from peftkit.errors import PrivacyError, RecipeError
from peftkit.rundir import read_run
from peftkit.training.trainer import _private_plan

PRIVATE = {"privacy": {"noise_multiplier": 1.0, "max_grad_norm": 1.0}, "schedule": "constant"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_base(root / "base"), write_chat(root / "chat.jsonl")


def by_hand(steps: int, rows: int, batch: int, sigma: float) -> float:
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=batch / rows)
    return acc.get_epsilon(delta=1 / (2 * rows))


def test_private_run_records_the_accountants_epsilon(assets, tmp_path):
    base, data = assets
    run = peftkit.train(tiny_recipe(base, data, tmp_path / "run", train=PRIVATE)).run_dir
    metrics, meta = json.loads((run / "metrics.json").read_text()), json.loads((run / "meta.json").read_text())
    rows = meta["privacy"]["rows"]
    assert rows == 18 and meta["privacy"]["expected_batch"] == 4 and meta["privacy"]["sampling"] == "poisson"
    spent = metrics["train"]["privacy"]
    assert spent["epsilon"] == pytest.approx(by_hand(6, rows, 4, 1.0), rel=1e-9) == meta["privacy"]["epsilon_at_end"]
    assert spent["delta"] == 1 / 36 and "pre-training" in spent["covers"]
    curve = metrics["train"]["loss_curve"]
    assert [c["epsilon"] for c in curve] == pytest.approx([by_hand(k, rows, 4, 1.0) for k in range(1, 7)], abs=1e-6)
    card = adapter_card(read_run(run))
    assert f"(epsilon {spent['epsilon']:.3f}, delta {1 / 36:.3g})" in card and "Poisson sampling" in card
    # the hooks are gone: the saved adapter evaluates like any other
    assert metrics["eval"]["after"]["loss"] > 0


def test_resume_keeps_the_accountant_state_exactly(assets, tmp_path, monkeypatch):
    base, data = assets
    # the run's sampling/noise secret comes from the OS; fixed here so two runs can be compared
    monkeypatch.setattr("peftkit.privacy.sampling.fresh_secret", lambda: 1234)
    whole = peftkit.train(tiny_recipe(base, data, tmp_path / "whole", train=PRIVATE)).run_dir
    part = {**PRIVATE, "max_steps": 3, "checkpoint_every": 3}
    peftkit.train(tiny_recipe(base, data, tmp_path / "cut", train=part))
    resumed = peftkit.train(tiny_recipe(base, data, tmp_path / "cut", train={**part, "max_steps": 6}), resume=True)
    assert resumed.resumed_from == 3
    a = json.loads((whole / "metrics.json").read_text())["train"]["privacy"]
    b = json.loads((resumed.run_dir / "metrics.json").read_text())["train"]["privacy"]
    assert a["epsilon"] == b["epsilon"]  # exactly, not approximately
    state = json.loads(sorted((resumed.run_dir / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    assert state["extra"]["privacy"]["history"] == [[1.0, 4 / 18, 6]] and state["extra"]["privacy"]["secret"] == 1234
    assert "1234" not in (resumed.run_dir / "recipe.yaml").read_text() + (resumed.run_dir / "meta.json").read_text()
    wa = load_file(whole / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed.run_dir / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same Poisson draws and the same noise


@pytest.mark.parametrize("section, values, match", [
    ("data", {"packing": True}, "data.packing.*packing puts several examples in one row"),
    ("adapter", {"method": "loha"}, "adapter.method.*loha is not supported"),
    ("train", {"batch_size": "auto", "effective_batch": 4}, "train.batch_size.*measures steps on the private rows"),
    ("train", {"gradient_checkpointing": True}, "train.gradient_checkpointing.*captured twice"),
])
def test_settings_that_break_the_guarantee_are_refused_in_one_line(assets, tmp_path, section, values, match):
    base, data = assets
    sections = {section: values}
    sections["train"] = {**PRIVATE, **sections.get("train", {})}
    with pytest.raises(RecipeError, match=match) as err:
        tiny_recipe(base, data, tmp_path / "run", **sections)
    assert "\n" not in str(err.value)


def test_privacy_needs_exactly_one_of_epsilon_or_noise(assets, tmp_path):
    base, data = assets
    for privacy in ({}, {"epsilon": 8, "noise_multiplier": 1.0}):
        with pytest.raises(RecipeError, match="exactly one of epsilon"):
            tiny_recipe(base, data, tmp_path / "run", train={"privacy": privacy})


def test_multi_process_fp16_and_a_non_private_checkpoint_are_refused(assets, tmp_path):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train=PRIVATE)
    cases = [
        (SimpleNamespace(num_processes=2, mixed_precision="no"), None, "2 processes"),
        (SimpleNamespace(num_processes=1, mixed_precision="fp16"), None, "fp16's loss scaler"),
        (SimpleNamespace(num_processes=1, mixed_precision="no"), (tmp_path / "step-000003", {"extra": {}}),
         "no privacy accountant state"),
    ]
    for accelerator, found, match in cases:
        with pytest.raises(PrivacyError, match=match) as err:
            _private_plan(recipe, 18, accelerator, found)
        assert "\n" not in str(err.value)


def test_the_shipped_private_recipe_validates():
    from pathlib import Path

    recipe = peftkit.load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "minilm-lora-sst2-dp.yaml")
    p = recipe.train.privacy
    assert (p.epsilon, p.delta, p.accountant, p.sampling) == (8, "auto", "rdp", "poisson")
    assert recipe.adapter.method == "lora" and recipe.data.packing is False
    off = peftkit.load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "minilm-lora-sst2-dp.yaml",
                              ["train.privacy=null"])
    assert off.train.privacy is None


def test_a_private_run_on_a_4bit_base(assets, tmp_path):
    base, data = assets
    run = peftkit.train(tiny_recipe(base, data, tmp_path / "run", train={**PRIVATE, "max_steps": 3},
                                    model={"quantization": {"bits": 4, "compute_dtype": "bfloat16"}})).run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["privacy"]["epsilon"] == pytest.approx(by_hand(3, 18, 4, 1.0), rel=1e-9)
    assert all(c["loss"] > 0 and c["grad_norm"] > 0 for c in metrics["train"]["loss_curve"])
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)  # only the adapter trained; the 4-bit base has no grads


def test_with_almost_no_noise_and_no_clipping_a_private_run_learns_like_a_plain_one(assets, tmp_path):
    """The private step's wiring (hooks, clipping, noise, the division by the expected batch, the optimizer stepping
    what is left in .grad) checked end to end: with a clip no gradient reaches and noise of std 1e-4 (noise
    multiplier x clip), the eval loss falls as far as the non-private run's, within a quarter of its fall (the
    draws differ: Poisson rows, per-example mean)."""
    base, data = assets
    quiet = {"privacy": {"noise_multiplier": 1e-7, "max_grad_norm": 1e3}, "schedule": "constant", "max_steps": 12}
    private = peftkit.train(tiny_recipe(base, data, tmp_path / "private", train=quiet)).run_dir
    plain = peftkit.train(tiny_recipe(base, data, tmp_path / "plain", train={**quiet, "privacy": None})).run_dir
    fall = {}
    for name, run in (("private", private), ("plain", plain)):
        ev = json.loads((run / "metrics.json").read_text())["eval"]
        fall[name] = ev["before"]["loss"] - ev["after"]["loss"]
    assert fall["plain"] > 0.5 and abs(fall["private"] - fall["plain"]) < 0.25 * fall["plain"], fall
