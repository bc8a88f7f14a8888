"""The adapter size preflight sizes the disk with, from config.json alone: never under what PEFT really creates
and saves, and not far over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model_state_dict
from support.tiny_run import write_base
from transformers import AutoModelForCausalLM, BertConfig, BertForSequenceClassification

from peftkit.adapters import attach_adapter, param_report
from peftkit.adapters.estimate import PER_LAYER, BaseShape, base_shape, estimate_adapter_params
from peftkit.recipe.schema import AdapterSpec
from peftkit.recipe.schema.adapter import ALL_METHODS, PROMPT_LEARNING

CASES = {
    "lora": {"rank": 4},
    "dora": {"method": "dora", "rank": 4},
    "rslora": {"method": "rslora", "rank": 8},
    "loha": {"method": "loha", "rank": 4},
    "lokr": {"method": "lokr", "rank": 4},
    "lokr-full-w2": {"method": "lokr", "rank": 16},  # PEFT keeps w2 whole once the rank is half its width
    "vera": {"method": "vera", "rank": 4},  # trains two vectors; saves the shared projections too
    "adalora": {"method": "adalora", "rank": 4},  # sized at its start rank, 1.5 x rank
    "ia3": {"method": "ia3"},
    "oft": {"method": "oft", "block_size": 16},
    "boft": {"method": "boft", "block_size": 16},
    "prompt_tuning": {"method": "prompt_tuning", "num_virtual_tokens": 4},
    "prefix_tuning": {"method": "prefix_tuning", "num_virtual_tokens": 4},
    "lora-attention": {"rank": 4, "targets": "attention"},
    "lora-mlp-layer-1": {"rank": 4, "targets": "mlp", "layers": (1,)},
    "lora-named": {"rank": 4, "targets": ("q_proj", "self_attn.v_proj")},
    "ia3-named": {"method": "ia3", "targets": ("k_proj", "v_proj", "down_proj")},
    "oft-mlp": {"method": "oft", "block_size": 4, "targets": "mlp"},
    "lora-lm_head": {"rank": 4, "modules_to_save": ("lm_head",)},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def shape(base) -> BaseShape:
    return base_shape(json.loads((base / "config.json").read_text()))


def trained_and_saved(model: torch.nn.Module) -> tuple[int, int]:
    return param_report(model).trainable, sum(t.numel() for t in get_peft_model_state_dict(model).values())


def test_every_method_has_an_estimate():
    assert set(PER_LAYER) | set(PROMPT_LEARNING) == set(ALL_METHODS)


@pytest.mark.parametrize("case", list(CASES))
def test_estimate_bounds_the_real_adapter_from_above(base, shape, case):
    spec = AdapterSpec(**CASES[case])
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(base), spec, task="causal_lm", total_steps=10)
    trained, saved = trained_and_saved(model)
    estimate = estimate_adapter_params(spec, shape)
    assert max(trained, saved) <= estimate <= 4 * trained, (trained, saved, estimate)


def test_a_name_the_shape_does_not_know_counts_as_the_widest_layer(shape):
    named = AdapterSpec(rank=4, targets=("q_proj",))
    unknown = AdapterSpec(rank=4, targets=("q_proj", "fused_qkv"))
    every = AdapterSpec(rank=4)
    widest = max(shape.hidden, shape.intermediate)
    assert estimate_adapter_params(unknown, shape) - estimate_adapter_params(named, shape) == \
        shape.layers * 4 * 2 * widest
    many = AdapterSpec(rank=4, targets=tuple(f"fused_{i}" for i in range(20)))
    assert estimate_adapter_params(many, shape) == estimate_adapter_params(every, shape)  # never past all-linear


def test_bert_classifier_is_counted_from_above():
    config = BertConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_labels=3)
    spec = AdapterSpec(rank=4, modules_to_save=("classifier",))
    model = attach_adapter(BertForSequenceClassification(config), spec, task="sequence_classification")
    trained, saved = trained_and_saved(model)
    assert max(trained, saved) <= estimate_adapter_params(spec, base_shape(config.to_dict()))


def test_shape_from_config_json_variants():
    assert base_shape({"model_type": "unknown"}) is None
    wrapped = base_shape({"architectures": ["Llava"], "text_config": {"hidden_size": 64, "num_hidden_layers": 2}})
    assert (wrapped.hidden, wrapped.layers, wrapped.intermediate) == (64, 2, 256)
    moe = base_shape({"hidden_size": 64, "num_hidden_layers": 2, "num_local_experts": 8})
    lora = AdapterSpec(rank=4)
    dense = estimate_adapter_params(lora, base_shape({"hidden_size": 64, "num_hidden_layers": 2}))
    assert moe.experts == 8 and estimate_adapter_params(lora, moe) > 4 * dense  # every expert's MLP may be wrapped
