"""Target presets, explicit names and layer indices resolve to real module names; no match names what exists."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from peftkit.adapters import linear_module_names, resolve_targets
from peftkit.adapters.targets import feedforward_targets
from peftkit.errors import RecipeError
from peftkit.recipe.schema import AdapterSpec

LLAMA_LEAVES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def leaves(names: list[str]) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in names}


def tiny_bert() -> BertForSequenceClassification:
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     num_labels=2)
    return BertForSequenceClassification(cfg)


def test_llama_presets(tiny_llama):
    model = tiny_llama()
    all_linear = resolve_targets(AdapterSpec(targets="all-linear"), model)
    assert leaves(all_linear) == LLAMA_LEAVES and len(all_linear) == 2 * 7  # two layers, never lm_head
    assert leaves(resolve_targets(AdapterSpec(targets="attention"), model)) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert leaves(resolve_targets(AdapterSpec(targets="mlp"), model)) == {"gate_proj", "up_proj", "down_proj"}
    assert "lm_head" in linear_module_names(model)


def test_explicit_names_and_layers(tiny_llama):
    model = tiny_llama()
    got = resolve_targets(AdapterSpec(targets=("q_proj", "v_proj"), layers=(1,)), model)
    assert got == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


def test_bert_mlp_preset_leaves_attention_output_alone():
    model = tiny_bert()
    mlp = resolve_targets(AdapterSpec(targets="mlp"), model)
    assert mlp and all(".attention." not in n for n in mlp)
    assert {n.split(".", 4)[-1] for n in mlp} == {"intermediate.dense", "output.dense"}
    attention = resolve_targets(AdapterSpec(targets="attention"), model)
    assert any(n.endswith("attention.output.dense") for n in attention)
    assert not any("classifier" in n or "pooler" in n for n in resolve_targets(AdapterSpec(), model))


def test_no_match_names_the_models_linear_modules(tiny_llama):
    with pytest.raises(RecipeError) as info:
        resolve_targets(AdapterSpec(targets=("query", "value")), tiny_llama())
    (problem,) = info.value.problems
    assert problem.key == "adapter.targets"
    assert all(leaf in problem.message for leaf in LLAMA_LEAVES)
    assert "query" in str(info.value)


def test_preset_that_matches_nothing_is_an_error():
    model = torch.nn.ModuleDict({"encoder": torch.nn.ModuleDict({"fc_in": torch.nn.Linear(2, 2)})})
    with pytest.raises(RecipeError, match=r"adapter.targets: matches no linear module of this model \(its linear "
                                          r"modules: fc_in\) \(got 'attention'\)"):
        resolve_targets(AdapterSpec(targets="attention"), model)


def test_layer_out_of_range_names_the_layers(tiny_llama):
    with pytest.raises(RecipeError) as info:
        resolve_targets(AdapterSpec(layers=(5,)), tiny_llama())
    assert info.value.problems[0].key == "adapter.layers"
    assert "0..1" in info.value.problems[0].message


def test_ia3_feedforward_modules_are_the_mlp_outputs(tiny_llama):
    llama = resolve_targets(AdapterSpec(), tiny_llama())
    assert leaves(feedforward_targets(llama)) == {"down_proj"} and len(feedforward_targets(llama)) == 2
    bert = resolve_targets(AdapterSpec(), tiny_bert())
    ff = feedforward_targets(bert)
    assert ff and all(n.endswith(".output.dense") and ".attention." not in n for n in ff)
