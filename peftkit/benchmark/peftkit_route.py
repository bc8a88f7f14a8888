"""The peftkit route: `peftkit.train` on the recipe, exactly as `peftkit train` runs it, except what only the
bench needs: the loss curve logged every step, no checkpoints, and eval reduced to the held-out loss (no
generation metrics, no eval-before) so both routes spend the same time measuring. Preference runs: the loss curve's
per-step token counts are both sequences of each pair (trained: the answers), and the eval metrics are the run's own
(metrics.json eval.after: the objective's loss, rewards, margin, reward and preference accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ..data.prepare import prepare_data
from ..modeling.zoo import resolve_base
from ..recipe import Recipe, recipe_from_dict
from ..rundir import read_run
from ..training.trainer import train
from .measure import process_age_s
from .record import (
    RouteRun,
    canonical_base,
    examples_digest,
    matched_preference,
    matched_train,
    mean_sequence_tokens,
    preference_digest,
)


def bench_recipe(recipe: Recipe, run_dir: Path) -> Recipe:
    raw = recipe.model_dump(mode="json")
    raw["train"].update(log_every=1, checkpoint_every=None, resume="never")
    raw["eval"].update(metrics=["loss"], before=False)
    raw["output"] = {"dir": str(run_dir), "overwrite": True}
    return recipe_from_dict(raw)


def run_peftkit(recipe: Recipe, workdir: Path) -> RouteRun:
    run_dir = workdir / "run"
    result = train(bench_recipe(recipe, run_dir), run_dir=run_dir, force=True, console=Console(stderr=True))
    wall = process_age_s()
    m = result.metrics.train
    # the run's own per-phase peaks (loading, eval, training): their maximum is the whole process's peak
    peak, kind = m.peak_memory_mb, m.peak_memory["kind"]
    curve = {p["step"]: p for p in m.loss_curve}  # log_every=1: every step, with its own token counts
    steps = m.steps
    tokens = [curve[s]["tokens"] for s in range(1, steps + 1)]
    trained = [curve[s]["trained_tokens"] for s in range(1, steps + 1)]
    data = prepare_data(recipe).data

    run = read_run(run_dir)  # what the run says it used
    ran = run.recipe
    preference = ran.train.objective != "sft"
    # pairs: what is compared is the prompt and trained answer ids, however each route splits and pads them
    digest = preference_digest(data.train) if preference else examples_digest(data.train)
    adapter = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    gc, packed = run.meta.gradient_checkpointing, run.meta.packing
    q = ran.model.quantization
    settings = {
        "matched": {
            "base": canonical_base(resolve_base(ran.model.base).path_or_id),
            "dtype": ran.model.dtype,
            "quantization": {"bits": None} if q.bits is None else {"bits": 8} if q.bits == 8 else {
                "bits": 4, "quant_type": q.quant_type, "double_quant": q.double_quant,
                "compute_dtype": q.compute_dtype},
            "adapter": {
                "method": "dora" if adapter.get("use_dora") else "rslora" if adapter.get("use_rslora") else "lora",
                "rank": adapter["r"], "alpha": float(adapter["lora_alpha"]), "dropout": adapter["lora_dropout"],
                "targets": sorted(adapter["target_modules"]),
                "modules_to_save": sorted(adapter.get("modules_to_save") or []),
            },
            "train": matched_train(ran),
            "data": {
                "max_length": ran.data.max_length, "train_examples": len(data.train),
                "eval_examples": result.metrics.eval.examples, "examples_sha256": digest,
            },
            "trainable_params": result.params.trainable,
        },
        "defaults": {
            "trainer": "peftkit.train",
            # the recipe the run wrote has no `auto` left; meta.json keeps whether it was auto, and why
            "gradient_checkpointing": f"{gc['enabled']} ({gc['why']})" if gc["why"].startswith("auto")
            else gc["enabled"],
            "mixed_precision": ran.train.mixed_precision,
            "adapter_dtype": "float32",
            "attn_implementation": ran.model.attn_implementation,  # resolved by training.choices
            "optimizer": ran.train.optimizer,
            "packing": packed,
            "padding_free": packed,
            "vocabulary_projection": "trained positions only" if ran.train.selective_logits else "every position",
            "logging_steps": 1,
            "cpu_4bit_repack_disabled_layers": "all (peftkit.modeling.load)",
        },
    }
    if preference:  # the objective as the run resolved it; meta.json says where its reference came from
        settings["matched"]["preference"] = matched_preference(ran, run.meta.reference.get("mode", "none"))
        settings["matched"] = {k: settings["matched"].pop(k) for k in (
            "base", "dtype", "quantization", "adapter", "train", "preference", "data", "trainable_params")}
        settings["defaults"].update({"data_feed": "peftkit.data (prepare_data)", "data_order": "peftkit's sampler "
                                     "(seed)", "adapter_dropout": "the recipe's"})
        if ran.train.objective == "orpo":
            settings["defaults"]["orpo_nll"] = "chosen answer tokens, mean per pair (the paper's)"
    after = result.metrics.eval.after
    return RouteRun(
        route="peftkit", settings=settings, step_elapsed_s=[curve[s]["elapsed_s"] for s in range(1, steps + 1)],
        step_tokens=tokens, step_trained_tokens=trained, step_loss=[curve[s]["loss"] for s in range(1, steps + 1)],
        eval_loss=after["loss"], peak_memory_mb=peak, wall_s=wall, memory_kind=kind,
        trainable_params=result.params.trainable, mean_example_tokens=mean_sequence_tokens(data.train),
        eval_metrics=dict(after) if preference else {},
    )
