"""train.gradient_checkpointing: auto turns checkpointing on only when the estimated activations of the largest
allowed batch exceed a quarter of the device's memory; the choice reaches the run's meta.json."""

import json
from types import SimpleNamespace

import pytest
from support.tiny_run import tiny_recipe, write_base, write_chat

import peftkit
from peftkit.recipe import recipe_from_dict
from peftkit.adapters.estimate import base_shape
from peftkit.training.memory import ActivationModel, activation_bytes
from peftkit.training.choices import activation_estimate, choose_checkpointing

SMOLLM2 = SimpleNamespace(num_hidden_layers=30, hidden_size=576)


def test_estimate_is_the_planners_model_and_scales_with_tokens_layers_and_width():
    # one model of memory: the recompute choice reads the activation count `peftkit plan` shows
    assert activation_estimate(1000, SMOLLM2) == activation_bytes(base_shape(vars(SMOLLM2)), 1000, ActivationModel(),
                                                                  recompute=False)
    assert activation_estimate(2000, SMOLLM2) == 2 * activation_estimate(1000, SMOLLM2)
    deeper = SimpleNamespace(num_hidden_layers=60, hidden_size=576)
    assert activation_estimate(1000, deeper) > 1.9 * activation_estimate(1000, SMOLLM2)
    assert activation_estimate(1000, SimpleNamespace()) is None


@pytest.mark.parametrize("setting", [True, False])
def test_an_explicit_setting_is_kept(setting):
    choice = choose_checkpointing(setting, batch_size=64, max_length=4096, config=SMOLLM2, device_bytes=2**40)
    assert choice.enabled is setting and choice.why == "set in the recipe"


def test_auto_switches_at_a_quarter_of_device_memory():
    need = activation_estimate(8 * 512, SMOLLM2)  # Code Alpaca's recipe: batch 8 x max length 512
    on = choose_checkpointing("auto", batch_size=8, max_length=512, config=SMOLLM2, device_bytes=4 * need - 1)
    off = choose_checkpointing("auto", batch_size=8, max_length=512, config=SMOLLM2, device_bytes=4 * need)
    assert on.enabled and not off.enabled
    assert on.estimate_bytes == off.estimate_bytes == need
    assert "8 x 512-token batch" in on.why and ">" in on.why and "<=" in off.why


def test_auto_checkpoints_when_the_model_cannot_be_sized():
    choice = choose_checkpointing("auto", batch_size=8, max_length=512, config=SimpleNamespace(), device_bytes=2**40)
    assert choice.enabled and "no layer count" in choice.why


def test_recipe_refuses_other_values():
    with pytest.raises(Exception, match="gradient_checkpointing"):
        recipe_from_dict({"name": "x", "model": {"base": "b"}, "data": {"path": "d.jsonl", "format": "chat"},
                          "train": {"gradient_checkpointing": "sometimes"}})


def test_the_run_records_its_choice(tmp_path):
    base, data = write_base(tmp_path / "base"), write_chat(tmp_path / "chat.jsonl")
    for setting in ("auto", True):
        raw = tiny_recipe(base, data, tmp_path / f"run-{setting}").model_dump(mode="json")
        raw["train"].update(gradient_checkpointing=setting, max_steps=2)
        result = peftkit.train(recipe_from_dict(raw))
        meta = json.loads((result.run_dir / "meta.json").read_text())
        # the tiny model's activations are far below a quarter of any machine's memory
        assert meta["gradient_checkpointing"]["enabled"] is (setting is True), meta["gradient_checkpointing"]
        assert meta["packing"] is (setting is True)  # packing auto follows checkpointing


def test_offload_without_checkpointing_is_refused_naming_the_key():
    raw = {"name": "x", "model": {"base": "b"}, "data": {"path": "d.jsonl", "format": "chat"},
           "train": {"gradient_checkpointing": False, "checkpoint_offload": True}}
    with pytest.raises(Exception, match="checkpoint_offload"):
        recipe_from_dict(raw)
    raw["train"]["gradient_checkpointing"] = "auto"
    assert recipe_from_dict(raw).train.checkpoint_offload
