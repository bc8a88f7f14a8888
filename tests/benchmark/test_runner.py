"""run_bench end to end on a tiny 4-bit model: both routes really train, on the same settings and tokens."""

import json
import math
from pathlib import Path

from support.bnb_cpu import bnb_repacks_4bit_on_this_cpu

from peftkit.benchmark.runner import METRICS, SCHEMA, mismatches

QUANTIZED_LAYERS = 14  # all-linear on the 2-layer Llama: 7 projections per layer, each a Linear4bit


def test_trl_route_uses_the_recipes_settings(tiny_bench):
    result, recipe = tiny_bench
    steps = recipe.train.max_steps
    trl = result.results["routes"]["trl"]["settings"]["matched"]
    ours = result.results["routes"]["peftkit"]["settings"]["matched"]
    assert trl["base"] == str(Path(recipe.model.base).resolve())
    assert trl["quantization"] == {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
    a = recipe.adapter
    assert (trl["adapter"]["rank"], trl["adapter"]["alpha"], trl["adapter"]["dropout"]) == (a.rank, a.alpha, a.dropout)
    # all-linear on the 2-layer Llama: 7 projections per layer, the same module names as peftkit's adapter
    assert len(trl["adapter"]["targets"]) == QUANTIZED_LAYERS
    assert trl["adapter"]["targets"] == ours["adapter"]["targets"]
    t = trl["train"]
    assert (t["lr"], t["max_steps"], t["batch_size"], t["seed"]) == (recipe.train.lr, steps, recipe.train.batch_size,
                                                                     recipe.train.seed)
    assert (t["schedule"], t["warmup_steps"]) == ("cosine", 1)
    assert trl["data"]["max_length"] == recipe.data.max_length
    # the very same examples, tokens and response-only labels
    assert trl["data"]["examples_sha256"] == ours["data"]["examples_sha256"]
    assert trl["data"]["train_examples"] == ours["data"]["train_examples"] > 0
    assert trl["trainable_params"] == ours["trainable_params"] > 0
    assert result.results["settings_check"] == {"ok": True, "mismatches": []}


def test_both_routes_really_trained(tiny_bench):
    result, recipe = tiny_bench
    steps = recipe.train.max_steps
    routes = result.results["routes"]
    defaults = routes["trl"]["settings"]["defaults"]
    assert defaults["trainer"] == "trl.SFTTrainer"
    assert defaults["gradient_checkpointing"] is True  # TRL's default is kept: it is part of what is compared
    # the peer is protected from the CPU 4-bit repack on every layer where bitsandbytes would repack (AVX512-BF16
    # CPUs); elsewhere bitsandbytes never repacks and there is nothing to switch off
    repacks = bnb_repacks_4bit_on_this_cpu()
    assert defaults["cpu_4bit_repack_disabled_layers"] == (QUANTIZED_LAYERS if repacks else 0), (
        f"bitsandbytes {'repacks' if repacks else 'does not repack'} 4-bit weights on this CPU")
    for route in ("peftkit", "trl"):
        run = routes[route]["runs"][0]
        assert run["steps"] == steps and run["timed_steps"] == steps - 2 and run["warmup_excluded"] == 2
        assert len(run["loss_curve"]) == steps and all(math.isfinite(loss) for _, loss in run["loss_curve"])
        assert run["trained_tokens"] > 0 and run["tokens"] > run["trained_tokens"]  # prompts are not trained
        assert run["trained_tokens_per_s"] > 0 and run["peak_memory_mb"] > 100 and run["memory_kind"] == "rss_peak"
        assert math.isfinite(run["eval_loss"])
    # both started from the same weights and data: the losses of step 1 agree closely
    first = [routes[r]["runs"][0]["loss_curve"][0][1] for r in ("peftkit", "trl")]
    assert abs(first[0] - first[1]) < 0.05 * first[1]


def test_json_schema(tiny_bench):
    result, _ = tiny_bench
    r = json.loads(result.json_path.read_text())
    assert r["schema"] == SCHEMA and r["name"] == "tiny-bench"
    assert {"name", "recipe", "machine", "method", "routes", "medians", "ratios", "settings_check", "utilisation",
            "goals", "command", "created_utc"} <= set(r)
    assert {"cpu", "torch_threads", "versions", "load_average"} <= set(r["machine"])
    assert r["machine"]["versions"]["torch"] and r["machine"]["versions"]["trl"]
    assert r["method"]["order"] == ["peftkit", "trl"] and r["method"]["warmup_steps_excluded"] == 2
    for m in METRICS:
        p, t = r["medians"]["peftkit"][m], r["medians"]["trl"][m]
        assert math.isclose(r["ratios"][m], p / t)
    u = r["utilisation"]
    assert u["matmul_probe"]["gflops"] > 0 and u["flops_per_token"] > 0
    assert math.isclose(u["mfu"]["trl"], u["flops_per_token"] * r["medians"]["trl"]["tokens_per_s"]
                        / (u["matmul_probe"]["gflops"] * 1e9))
    assert set(r["goals"]["met"]) == {"trained_tokens_per_s", "peak_memory", "eval_loss"}


def test_mismatches_names_each_differing_key():
    expected = {"train": {"lr": 1e-3, "seed": 1}, "base": "a"}
    assert mismatches(expected, {"train": {"lr": 1e-3 * (1 + 1e-12), "seed": 1}, "base": "a"}) == []
    assert mismatches(expected, {"train": {"lr": 2e-3, "seed": 1}}) == [
        "train.lr: expected 0.001, got 0.002", "base: expected 'a', got '<missing>'"]
