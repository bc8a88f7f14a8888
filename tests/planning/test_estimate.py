"""The breakdown's lines move the way the recipe's keys say they should."""

from pathlib import Path

import pytest

from peftkit import load_recipe
from peftkit.errors import PeftkitError
from peftkit.planning.cards import fits, parse_memory
from peftkit.planning.plan import plan_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
GiB = 2**30


def lines(recipe: str, *overrides: str, device: str = "cuda") -> dict:
    plan = plan_recipe(load_recipe(RECIPES / recipe, list(overrides)), device=device)
    return {line.key: line.bytes for line in plan.estimate.lines} | {"peak": plan.peak_bytes,
                                                                       "settings": plan.estimate.settings}


LLAMA = "gpu/llama-3.1-8b-qlora.yaml"


def test_each_key_moves_its_own_line():
    base = lines(LLAMA)
    assert lines(LLAMA, "train.gradient_checkpointing=false")["activations"] > 5 * base["activations"]
    assert lines(LLAMA, "model.quantization.bits=8")["weights_quantized"] > 1.8 * base["weights_quantized"]
    assert lines(LLAMA, "model.quantization.double_quant=false")["weights_quantized"] > base["weights_quantized"]
    assert lines(LLAMA, "train.optimizer=adamw_8bit")["optimizer"] == base["optimizer"] // 4
    assert lines(LLAMA, "adapter.rank=32")["adapter"] == 2 * base["adapter"]
    assert lines(LLAMA, "train.logits_chunk=null")["logits"] > 10 * base["logits"]
    assert lines(LLAMA, "train.batch_size=8", "train.grad_accum=2")["activations"] == 2 * base["activations"]
    assert "weights_quantized" not in lines(LLAMA, "model.quantization={bits: null}")


def test_generation_metrics_add_a_kv_cache_sized_by_the_config():
    kv = lines(LLAMA, "eval.metrics=[loss, rouge_l]", "eval.batch_size=4", "eval.max_new_tokens=128")["eval"]
    assert kv == 4 * (1024 + 128) * 32 * 2 * 8 * 128 * 2  # batch x length x layers x (k, v) x kv heads x dim x bf16


def test_preference_pairs_put_two_sequences_through_the_model():
    s = lines("smollm2-qlora-hh-dpo.yaml")["settings"]
    recipe = load_recipe(RECIPES / "smollm2-qlora-hh-dpo.yaml")
    assert s.rows_per_example == 2 and s.tokens_per_step == 2 * recipe.train.batch_size * recipe.data.max_length


def test_soft_capped_logits_are_not_chunked():
    s = lines("gpu/gemma-2-9b-qlora.yaml")["settings"]
    assert s.logits.startswith("all") and "soft-capped" in s.logits


def test_cpu_plan_refuses_cuda_only_optimizers_and_counts_the_process():
    with pytest.raises(PeftkitError, match="train.optimizer"):
        lines("quickstart.yaml", "train.optimizer=paged_adamw_8bit", device="cpu")
    assert lines("quickstart.yaml", device="cpu")["settings"].autocast is False


@pytest.mark.parametrize("text, expected", [("12GB", 12 * GiB), ("12 GiB", 12 * GiB), ("11000MB", 11000 * 2**20),
                                            ("24", 24 * GiB), ("7.5g", int(7.5 * GiB))])
def test_memory_sizes(text, expected):
    assert parse_memory(text) == expected


def test_cards_are_gib():
    assert fits(12 * GiB)["12GB"] and not fits(12 * GiB + 1)["12GB"]


def test_known_trained_positions_size_the_logits():
    """A measured batch says how many positions carry loss; selective logits project only those (the plan from
    the config alone assumes all of them, as many as the chunk holds)."""
    recipe = load_recipe(RECIPES / LLAMA)
    vocab_row = 128_256 * (2 + 4 + 4)  # bf16 logits, the fp32 copy the loss reads, its gradient
    logits = {n: next(x.bytes for x in plan_recipe(recipe, trained_positions=n).estimate.lines if x.key == "logits")
              for n in (None, 100, 10_000)}
    assert logits[None] == logits[10_000] == 256 * vocab_row  # a chunk of 256 positions at a time
    assert logits[100] == 100 * vocab_row
    plain = load_recipe(RECIPES / LLAMA, ["train.selective_logits=false"])
    every = next(x.bytes for x in plan_recipe(plain, trained_positions=100).estimate.lines if x.key == "logits")
    assert every == 4 * 1024 * vocab_row  # without selective logits every position is projected
