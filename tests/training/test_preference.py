"""Preference objectives end to end on a tiny local model: every objective trains and logs its rewards, DPO
learns an unambiguous preference, the reference is the adapter-disabled model (or the SFT model when stacked
with adapter.init_from, precomputed once), and a resumed run equals the uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from support.tiny_run import tiny_recipe, write_base, write_chat, write_pairs
from transformers import AutoModelForCausalLM

import peftkit
from peftkit.adapters import attach_adapter
from peftkit.artifacts.card import adapter_card
from peftkit.data import make_collator
from peftkit.data.prepare import prepare_data
from peftkit.errors import RecipeError, TrainingAborted
from peftkit.modeling.logps import sequence_logps
from peftkit.modeling.objective import REFERENCE_FILE, ModelReference
from peftkit.recipe.schema import AdapterSpec
from peftkit.rundir import read_run
from peftkit.training import trainer as trainer_mod

PREF_STATS = {"rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "preference_accuracy",
              "logps_chosen", "logps_rejected"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    return write_base(root / "base"), write_pairs(root / "pairs.jsonl"), write_chat(root / "chat.jsonl")


def _recipe(assets, run_dir, **sections):
    base, pairs, _ = assets
    sections = {**sections, "data": {"format": "preference", **sections.get("data", {})},
                "eval": {"metrics": ["loss"], **sections.get("eval", {})}}
    return tiny_recipe(base, pairs, run_dir, **sections)


@pytest.mark.parametrize("objective, reference", [
    ("dpo", "adapter_off"), ("ipo", "adapter_off"), ("kto", "adapter_off"), ("orpo", None), ("simpo", None)])
def test_each_objective_trains_and_logs_its_rewards(assets, tmp_path, objective, reference):
    result = peftkit.train(_recipe(assets, tmp_path / "run", train={"objective": objective, "max_steps": 4}))
    curve = result.metrics.train.loss_curve
    assert len(curve) == 4 and all(PREF_STATS <= set(point) for point in curve)
    assert all(torch.isfinite(torch.tensor(point["loss"])) for point in curve)
    for when in (result.metrics.eval.before, result.metrics.eval.after):
        assert {"loss", "reward_accuracy", "preference_accuracy", "reward_margin"} <= set(when)
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["objective"] == objective
    assert meta["reference"].get("mode") == reference
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    if reference is not None:  # the policy starts as its reference: nothing preferred yet
        assert result.metrics.eval.before["reward_margin"] == 0.0
        assert result.metrics.eval.before["reward_accuracy"] == 0.0


def test_kto_trains_on_unpaired_rows(assets, tmp_path):
    rows = [{"prompt": f"add {i} and 1", "completion": f"{i} + 1 = {i + 1 + (i % 2)}", "label": i % 2 == 0}
            for i in range(16)]
    path = tmp_path / "unpaired.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = peftkit.train(tiny_recipe(assets[0], path, tmp_path / "run", data={"format": "unpaired_preference"},
                                       train={"objective": "kto", "max_steps": 3}, eval={"metrics": ["loss"]}))
    assert {"loss", "kl"} <= set(result.metrics.eval.after) and len(result.metrics.train.loss_curve) == 3
    assert result.metrics.eval.before["loss"] == 0.5  # 1 - sigmoid(0) while policy = reference


def test_dpo_learns_an_unambiguous_preference(assets, tmp_path):
    refusals = write_pairs(tmp_path / "refusals.jsonl", refusals=True)
    recipe = tiny_recipe(assets[0], refusals, tmp_path / "run", data={"format": "preference"},
                         train={"objective": "dpo", "max_steps": 15, "lr": 5e-3}, eval={"metrics": ["loss"]})
    result = peftkit.train(recipe)
    before, after = result.metrics.eval.before, result.metrics.eval.after
    assert after["reward_accuracy"] == 1.0 and after["reward_margin"] > 0.2
    assert after["rewards_rejected"] < before["rewards_rejected"] - 1.0  # rejected answers pushed down
    assert after["loss"] < before["loss"]


def _logps(model, rows, tokenizer) -> torch.Tensor:
    batch = make_collator(tokenizer, packing=False, objective="dpo")(rows)
    with torch.no_grad():
        return sequence_logps(model.eval(), batch)[0]


def test_adapter_off_reference_is_the_bare_base(assets):
    base_dir, _, _ = assets
    recipe = _recipe(assets, "unused", train={"objective": "dpo"})
    tokenizer, data = prepare_data(recipe)
    policy = attach_adapter(AutoModelForCausalLM.from_pretrained(base_dir), AdapterSpec(rank=4, dropout=0.0),
                            task="causal_lm")
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # the policy has moved away from the base
    bare = AutoModelForCausalLM.from_pretrained(base_dir)
    batch = make_collator(tokenizer, packing=False, objective="dpo")(data.train[:4])
    reference, _ = ModelReference(policy.eval(), adapter_off=True)(batch)
    torch.testing.assert_close(reference, _logps(bare, data.train[:4], tokenizer), rtol=1e-5, atol=1e-5)
    assert (_logps(policy, data.train[:4], tokenizer) - reference).abs().max() > 1e-3


@pytest.fixture(scope="module")
def sft_run(assets, tmp_path_factory):
    base, _, chat = assets
    root = tmp_path_factory.mktemp("sft")
    return peftkit.train(tiny_recipe(base, chat, root / "sft", train={"max_steps": 8, "lr": 2e-2},
                                     eval={"metrics": ["loss"], "before": False})).run_dir


def test_stacked_on_an_sft_adapter_the_reference_is_the_sft_model(assets, sft_run, tmp_path):
    recipe = _recipe(assets, tmp_path / "dpo", adapter={"init_from": str(sft_run)},
                     train={"objective": "dpo", "max_steps": 3})
    result = peftkit.train(recipe)
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["reference"]["mode"] == "precomputed" and str(sft_run) in meta["reference"]["model"]
    assert meta["init_from"] == str(sft_run)
    assert "precompute_ref: true" in (result.run_dir / "recipe.yaml").read_text()
    assert result.metrics.eval.before["reward_margin"] == 0.0  # it starts as the SFT model it is compared with
    card = adapter_card(read_run(result.run_dir))
    assert "objective dpo, beta 0.1" in card and f"started from the adapter of `{sft_run}`" in card
    assert "precomputed before training" in card

    tokenizer, data = prepare_data(recipe)
    table = load_file(str(result.run_dir / REFERENCE_FILE))["eval_logps"]
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(assets[0]), str(sft_run / "adapter"))
    index = make_collator(tokenizer, packing=False, objective="dpo")(data.eval)["answer_index"]
    torch.testing.assert_close(table[index], _logps(sft, data.eval, tokenizer), rtol=1e-5, atol=1e-5)
    bare = AutoModelForCausalLM.from_pretrained(assets[0])
    assert (table[index] - _logps(bare, data.eval, tokenizer)).abs().max() > 1e-3  # not the bare base


def test_precompute_off_when_stacked_records_the_bare_base(assets, sft_run, tmp_path):
    recipe = _recipe(assets, tmp_path / "dpo", adapter={"init_from": str(sft_run)},
                     train={"objective": "dpo", "max_steps": 1, "precompute_ref": False})
    result = peftkit.train(recipe)
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["reference"]["mode"] == "adapter_off" and "bare base" in meta["reference"]["why"]
    assert not (result.run_dir / REFERENCE_FILE).exists()


class _StopAt:
    """Stands in for GracefulStop: asks fit() to stop once `step` steps are done, as a Ctrl-C would."""

    def __init__(self, step: int):
        self.calls, self.step, self.requested = 0, step, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls > self.step:
            self.requested = "SIGINT"
        return self.requested is not None


def test_resume_keeps_the_precomputed_reference_and_equals_the_uninterrupted_run(assets, sft_run, tmp_path,
                                                                                  monkeypatch):
    sections = dict(adapter={"init_from": str(sft_run)},
                    train={"objective": "dpo", "max_steps": 6, "checkpoint_every": 1, "lr": 1e-2},
                    eval={"before": False})
    full = peftkit.train(_recipe(assets, tmp_path / "full", **sections))
    recipe = _recipe(assets, tmp_path / "cut", **sections)
    monkeypatch.setattr(trainer_mod, "GracefulStop", lambda: _StopAt(3))
    with pytest.raises(TrainingAborted):
        peftkit.train(recipe)
    monkeypatch.undo()
    saved = (tmp_path / "cut" / REFERENCE_FILE).read_bytes()
    resumed = peftkit.train(recipe, resume=True)
    assert resumed.resumed_from == 3
    assert (tmp_path / "cut" / REFERENCE_FILE).read_bytes() == saved  # read back, not recomputed from step 3
    a = load_file(full.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.run_dir / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    for x, y in zip(full.metrics.train.loss_curve, resumed.metrics.train.loss_curve):
        assert x["step"] == y["step"] and abs(x["loss"] - y["loss"]) <= 1e-6
        assert abs(x["reward_margin"] - y["reward_margin"]) <= 1e-6


def test_init_from_errors_name_the_key(assets, sft_run, tmp_path):
    with pytest.raises(RecipeError, match="adapter.init_from: no such run directory"):
        peftkit.train(_recipe(assets, tmp_path / "a", adapter={"init_from": str(tmp_path / "nope")},
                              train={"objective": "dpo"}))
    with pytest.raises(RecipeError, match="adapter.init_from: its adapter is lora, the recipe's adapter.method is loha"):
        peftkit.train(_recipe(assets, tmp_path / "b", adapter={"init_from": str(sft_run), "method": "loha"},
                              train={"objective": "dpo"}))


def test_preflight_reads_pairs_before_any_weights_load(assets, tmp_path):
    from peftkit.errors import DataError
    from peftkit.training.preflight import preflight

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                   + json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    recipe = tiny_recipe(assets[0], bad, tmp_path / "run", data={"format": "preference"},
                         train={"objective": "dpo"})
    with pytest.raises(DataError, match=r"row 2: missing field 'rejected'"):
        preflight(recipe, tmp_path / "run", resume=False)
