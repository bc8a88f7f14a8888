"""--memory advice: each step lowers the estimate, is a valid override of the recipe, and the last one fits."""

from pathlib import Path

import pytest

from peftkit import load_recipe
from peftkit.planning.plan import plan_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
GiB = 2**30


@pytest.mark.parametrize("recipe, overrides, memory_gb", [
    ("gpu/llama-3.1-8b-qlora.yaml", ["train.gradient_checkpointing=false"], 8),  # recompute, micro-batch, length
    ("gpu/gemma-2-9b-qlora.yaml", [], 8),  # un-chunkable 256k logits: micro-batch, length, paged optimizer
    ("gpu/qwen2.5-1.5b-lora.yaml", ["train.logits_chunk=null", "train.batch_size=8", "train.grad_accum=2"], 4),
    ("gpu/mistral-7b-v0.3-qlora.yaml", ["model.quantization.bits=8", "train.gradient_checkpointing=false"], 10),
])
def test_each_step_lowers_the_estimate_and_is_a_valid_override(recipe, overrides, memory_gb):
    file = RECIPES / recipe
    start = plan_recipe(load_recipe(file, overrides), memory=memory_gb * GiB)
    assert start.peak_bytes > memory_gb * GiB and start.advice
    applied, previous = list(overrides), start.peak_bytes
    for step in start.advice:
        applied += step.overrides
        again = plan_recipe(load_recipe(file, applied), memory=memory_gb * GiB)  # what the user pastes
        assert again.peak_bytes == step.peak_bytes < previous, step
        previous = step.peak_bytes
    assert start.advice[-1].fits and all(not s.fits for s in start.advice[:-1])


def test_the_levers_come_cheapest_first():
    plan = plan_recipe(load_recipe(RECIPES / "gpu/mistral-7b-v0.3-qlora.yaml",
                                   ["model.quantization.bits=8", "train.gradient_checkpointing=false",
                                    "train.logits_chunk=null"]), memory=6 * GiB)
    keys = [o.split("=")[0] for step in plan.advice for o in step.overrides]
    assert keys[0] == "train.gradient_checkpointing"
    order = ["train.gradient_checkpointing", "train.batch_size", "data.max_length", "train.logits_chunk",
             "model.quantization.bits", "train.optimizer", "adapter.rank"]
    ranks = [order.index(k) for k in keys if k in order]
    assert ranks == sorted(ranks)


def test_a_recipe_that_fits_gets_no_advice():
    plan = plan_recipe(load_recipe(RECIPES / "gpu/qwen2.5-1.5b-lora.yaml"), memory=80 * GiB)
    assert plan.advice == () and plan.fits["80GB"]


def test_when_nothing_is_enough_every_step_that_helped_is_listed():
    plan = plan_recipe(load_recipe(RECIPES / "gpu/gemma-2-9b-qlora.yaml"), memory=2 * GiB)
    assert plan.advice and not plan.advice[-1].fits
    assert [s.peak_bytes for s in plan.advice] == sorted((s.peak_bytes for s in plan.advice), reverse=True)
