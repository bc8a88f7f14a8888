"""The weight lines: bitsandbytes' storage format, counted from a config's parameter inventory."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.planning.config import read_config
from peftkit.planning.inventory import build_inventory
from peftkit.planning.weights import four_bit_bytes, int8_bytes, weight_bytes

GiB = 2**30


def test_llama_3_1_8b_nf4_double_quant_matches_bitsandbytes_storage():
    """Llama-3.1-8B (hidden 4096, MLP 14336, 32 layers, 32 query / 8 KV heads of 128, vocab 128256, untied head)."""
    inv = build_inventory(read_config("meta-llama/Llama-3.1-8B").values)
    h, i, layers, vocab, kv = 4096, 14336, 32, 128256, 8 * 128
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * i  # q, k, v, o, gate, up, down
    linear = layers * per_layer  # 6,979,321,856: every linear layer of the blocks is quantized
    kept = 2 * vocab * h + (2 * layers + 1) * h  # embed_tokens + lm_head (untied) + RMSNorm weights, kept in bf16
    assert inv.linear_params == linear and inv.kept == kept and inv.total == 8_030_261_248

    # bitsandbytes 4-bit: 2 elements per byte; an absmax per 64 elements, stored as uint8 with double quantization,
    # plus an fp32 second-level absmax per 256 first-level blocks (per-tensor code tables are under a kilobyte)
    blocks = linear / 64
    expected = linear / 2 + blocks * 1 + blocks / 256 * 4  # = linear x (0.5 + 1/64 + 4/16384) bytes ~ 4.127 bits
    w = weight_bytes(inv, bits=4, quant_type="nf4", double_quant=True, dtype="bfloat16")
    assert abs(w.quantized - expected) / expected < 0.05
    assert abs(w.quantized - expected) < 224 * 2048  # only the per-tensor constants differ (224 tensors)
    assert w.kept == 2 * kept
    assert 3.3 * GiB < w.quantized < 3.4 * GiB and 5.2 * GiB < w.quantized + w.kept < 5.4 * GiB


def test_double_quant_saves_about_0_4_bits_per_parameter():
    n = 4096 * 14336
    saved_bits = 8 * (four_bit_bytes(4096, 14336, False) - four_bit_bytes(4096, 14336, True)) / n
    assert 0.35 < saved_bits < 0.4  # QLoRA paper: 0.373 bits per parameter


def test_int8_is_a_byte_per_weight_plus_row_scales():
    assert int8_bytes(4096, 1024) == 4096 * 1024 + 4 * 4096


def test_bf16_weight_line_is_the_real_models_parameter_bytes():
    """A tiny model built from a config: the planner's un-quantized weight line equals its parameters' bytes."""
    values = dict(model_type="llama", vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in values.items() if k != "model_type"})).to(torch.bfloat16)
    real = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings counted once
    w = weight_bytes(build_inventory(values), bits=None, dtype="bfloat16")
    assert w.quantized == 0 and w.kept == real


def test_zoo_inventory_counts_the_published_parameters():
    from peftkit.modeling.zoo import ZOO

    inv = build_inventory(read_config("smollm2-135m-instruct").values)
    assert inv.total == ZOO["smollm2-135m-instruct"].params and inv.tied
    assert build_inventory(read_config("all-minilm-l6-v2").values, task="sequence_classification").total > \
        ZOO["all-minilm-l6-v2"].params  # + the classification head


def test_skip_modules_stay_in_the_model_dtype():
    values = read_config("meta-llama/Llama-3.1-8B").values
    full, skipped = build_inventory(values), build_inventory(values, skip_modules=("down_proj",))
    down = 32 * 14336 * 4096
    assert skipped.linear_params == full.linear_params - down and skipped.kept == full.kept + down
