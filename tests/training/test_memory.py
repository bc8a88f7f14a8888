"""The activation model against what autograd really keeps: a tiny Llama with LoRA on every linear layer, its
saved tensors counted with saved_tensors_hooks (each storage once, parameters left out)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.adapters.estimate import base_shape
from peftkit.training.memory import ActivationModel, activation_bytes, layer_bytes, workspace_bytes

VALUES = dict(vocab_size=500, hidden_size=128, intermediate_size=344, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2)
BATCH, SEQ = 2, 48


def saved_bytes(attention: str, dtype: torch.dtype, dropout: float) -> int:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**VALUES, attn_implementation=attention)).to(dtype)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # peftkit keeps adapters fp32
    model.train()
    frozen = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(0, 500, (BATCH, SEQ)), use_cache=False)
    return sum(n for ptr, n in seen.items() if ptr not in frozen)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_the_model_counts_what_autograd_saves_within_20_percent(attention, dtype, dropout):
    act = 4 if dtype == torch.float32 else 2
    # on CPU PEFT casts each adapter input to fp32 and dropout keeps its fp32 scaled noise (peftkit.planning.model_for)
    model = ActivationModel(act_bytes=act, adapter_in_bytes=4, rank=8, dropout=dropout > 0, dropout_mask_bytes=4,
                            attention_seq=SEQ if attention == "eager" else None)
    shape = base_shape(VALUES)
    workspace = BATCH * SEQ * 2 * shape.intermediate * act  # one block's backward transient, not saved
    estimate = activation_bytes(shape, BATCH * SEQ, model, recompute=False) - workspace
    real = saved_bytes(attention, dtype, dropout)
    assert real <= estimate <= 1.2 * real, (estimate, real)


def test_recompute_keeps_one_block_and_the_block_inputs():
    shape, model = base_shape(VALUES), ActivationModel()
    off = activation_bytes(shape, 1000, model, recompute=False)
    # the backward's workspace exists for one block at a time, with or without recompute
    assert off == 1000 * (shape.layers * layer_bytes(shape, model) + workspace_bytes(shape, model) + shape.hidden * 8)
    on = activation_bytes(shape, 1000, model, recompute=True)
    offloaded = activation_bytes(shape, 1000, model, recompute=True, offload=True)
    assert offloaded < on < off
    assert on - offloaded == 1000 * shape.layers * shape.hidden * 4
    assert activation_bytes(shape, 2000, model, recompute=True) == 2 * on


def test_a_base_with_its_own_dropout_counts_masks_and_dropped_probabilities():
    """BERT (dropout 0.1) keeps three heads x sequence tensors (softmax output, dropout mask, dropped copy) and
    the masks of its two hidden dropouts; a frozen block's saved tensors against the model without adapters."""
    from transformers import BertConfig, BertModel

    values = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=100, hidden_act="gelu", attn_implementation="eager")
    torch.manual_seed(0)
    model = BertModel(BertConfig(**values)).train().requires_grad_(False)
    frozen = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(BATCH, SEQ, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.encoder(x)
    real = sum(n for ptr, n in seen.items() if ptr not in frozen)
    shape = base_shape({**values, "num_key_value_heads": 4})
    m = ActivationModel(act_bytes=4, adapted=frozenset(), attention_seq=SEQ, gated_mlp=False, rms_norm=False,
                        dropout_in_base=True)
    outside = shape.hidden * 8
    workspace = 2 * shape.intermediate * 4
    estimate = activation_bytes(shape, BATCH * SEQ, m, recompute=False) - BATCH * SEQ * (workspace + outside)
    assert real <= estimate <= 1.2 * real, (estimate, real)
