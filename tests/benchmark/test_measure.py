"""Measurement helpers: steady-state rates, FLOPs per token, model shape, memory, matmul probe."""

import math

import pytest
import torch
from transformers import LlamaConfig

from peftkit.benchmark.measure import (
    ModelShape,
    flops_per_token,
    matmul_rate,
    model_shape,
    steady_rates,
    tail_mean,
)
from peftkit.hardware import peak_memory_mb


def test_steady_rates_leave_out_the_warmup():
    elapsed = [5.0, 6.0, 7.0, 8.0]  # a slow first step
    rates = steady_rates(elapsed, [100, 100, 100, 100], [10, 20, 30, 40], warmup=2)
    assert rates.warmup_excluded == 2 and rates.timed_steps == 2
    assert rates.tokens_per_s == pytest.approx(200 / 2.0) and rates.trained_tokens_per_s == pytest.approx(70 / 2.0)
    whole = steady_rates(elapsed, [100] * 4, [10] * 4, warmup=0)
    assert whole.tokens_per_s == pytest.approx(400 / 8.0)


def test_steady_rates_time_short_runs_from_the_start():
    rates = steady_rates([1.0, 2.0], [10, 10], [1, 1], warmup=2)
    assert rates.warmup_excluded == 0 and rates.tokens_per_s == pytest.approx(10.0)
    with pytest.raises(ValueError):
        steady_rates([1.0], [1, 2], [1], warmup=0)


def test_tail_mean():
    assert tail_mean([9.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(3.0)
    assert tail_mean([None, 2.0]) == 2.0 and tail_mean([]) is None


def test_flops_per_token_formula():
    shape = ModelShape(frozen_linear_params=1000, layers=2, attn_width=8)
    assert flops_per_token(shape, trainable_params=10, mean_tokens=4) == 4 * 1000 + 6 * 10 + 12 * 2 * 4 * 8


def test_model_shape_counts_every_linear_of_the_base(tmp_path):
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    cfg.save_pretrained(tmp_path)
    shape = model_shape(str(tmp_path), task="causal_lm", num_labels=None, full_modules=())
    kv = 32 // 4 * 2
    per_layer = 32 * 32 * 2 + 32 * kv * 2 + 3 * 32 * 64  # q, o; k, v; gate, up, down
    assert shape == ModelShape(2 * per_layer + 100 * 32, 2, 32)  # + lm_head
    no_head = model_shape(str(tmp_path), task="causal_lm", num_labels=None, full_modules=("lm_head",))
    assert no_head.frozen_linear_params == 2 * per_layer


def test_peak_memory_and_matmul_probe():
    mb, kind = peak_memory_mb()
    assert kind == "rss_peak" and mb > 50  # torch alone is more than that
    probe = matmul_rate(seconds=0.05, size=128)
    assert probe.gflops > 0 and math.isfinite(probe.gflops) and probe.dtype == "bfloat16"
    fp32 = matmul_rate(seconds=0.05, size=128, dtype="float32")  # the dtype a run computes in, e.g. fp32 on CPUs
    assert fp32.dtype == "float32" and fp32.gflops > 0  # without native bf16
    assert probe.threads == torch.get_num_threads()
