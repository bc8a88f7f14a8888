"""run_bench: both routes in their own processes, alternating A B A B, then medians, ratios, utilisation and a
check that both routes really ran the same settings."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import PeftkitError
from ..modeling.zoo import resolve_base
from ..hardware import detect
from ..training.choices import resolve_precision
from ..recipe import Recipe, load_recipe
from .measure import (
    FLOPS_FORMULA,
    flops_per_token,
    machine_info,
    matmul_rate,
    model_shape,
    steady_rates,
    tail_mean,
)
from .peer import check_comparable
from .record import RouteRun, canonical_base, expected_reference, matched_preference, matched_train, write_spec
from .report import write_results

SCHEMA = "peftkit-bench/1"
METRICS = ("trained_tokens_per_s", "tokens_per_s", "peak_memory_mb", "wall_s", "train_s", "final_train_loss",
           "eval_loss")
# Preference runs also compare the held-out pair metrics (peftkit.evaluation.preference, the same function on both).
PREFERENCE_METRICS = ("eval_reward_accuracy", "eval_preference_accuracy", "eval_reward_margin")
# The performance issue's targets for peftkit against the TRL route (smollm2-qlora-codealpaca).
GOALS = {"trained_tokens_per_s_ratio_min": 1.5, "peak_memory_ratio_max": 0.7, "eval_loss_rel_diff_max": 0.02}
# Issue 15's targets for preference recipes (smollm2-qlora-hh-dpo); accuracies must agree within sampling noise.
PREFERENCE_GOALS = {"trained_tokens_per_s_ratio_min": 1.3, "peak_memory_ratio_max": 0.8, "accuracy_noise_z": 1.96}
DEFINITIONS = {
    "trained_tokens_per_s": "tokens carrying loss per second of training, over the steps after the warm-up",
    "tokens_per_s": "non-pad tokens (prompt and response) per second of training, over the steps after the warm-up",
    "peak_memory_mb": "peak resident set (VmHWM) of the route's own process, loading and eval included; "
                      "on CUDA torch.cuda.max_memory_allocated",
    "wall_s": "the route's process from its start to the end of its eval: imports, model load, data, training, eval",
    "train_s": "training seconds, all steps (warm-up included)",
    "final_train_loss": "mean train loss of the last 5 steps",
    "eval_loss": "token-weighted mean loss on the held-out examples (eval.max_examples), both routes scored by "
                 "peftkit.evaluation.measure.eval_loss",
    "mfu": "model FLOPs per token x tokens_per_s / the matmul rate, in the dtype the run computes in, measured at "
           "the start of the bench (dpo/ipo/kto's no-grad reference forward is not counted)",
}
PREFERENCE_DEFINITIONS = {
    "trained_tokens_per_s": "answer tokens (chosen and rejected, each through its end-of-turn) per second of "
                            "training, over the steps after the warm-up",
    "tokens_per_s": "non-pad tokens of both sequences of each pair (prompt and answer each) per second of training; "
                    "TRL's sequences end at the answer's end-of-turn, peftkit's keep the template's newline after it",
    "eval_loss": "the objective's loss on the held-out pairs (eval.max_examples), both routes scored by "
                 "peftkit.evaluation.preference.preference_metrics",
    "eval_reward_accuracy": "share of held-out pairs whose implicit reward ranks the chosen answer first",
    "eval_preference_accuracy": "share of held-out pairs where the model gives the chosen answer the higher summed "
                                "log-probability",
    "eval_reward_margin": "mean implicit reward of the chosen answer minus the rejected one's",
    "accuracy_noise": "z x sqrt(2 p (1 - p) / N): the spread of the difference of two accuracies p measured on N "
                      "pairs each; a difference below it is within noise",
}
REQUIRED = ("trl", "datasets", "matplotlib")


@dataclass(frozen=True)
class BenchResult:
    name: str
    json_path: Path
    md_path: Path
    png_path: Path
    results: dict  # what the JSON file holds

    @property
    def ratios(self) -> dict:
        return self.results["ratios"]


def summarize(run: RouteRun, warmup: int) -> dict:
    rates = steady_rates(run.step_elapsed_s, run.step_tokens, run.step_trained_tokens, warmup)
    pairs = {f"eval_{k}": run.eval_metrics.get(k) for k in ("reward_accuracy", "preference_accuracy", "reward_margin")}
    return {
        "trained_tokens_per_s": rates.trained_tokens_per_s,
        "tokens_per_s": rates.tokens_per_s,
        "peak_memory_mb": run.peak_memory_mb,
        "wall_s": run.wall_s,
        "train_s": run.step_elapsed_s[-1],
        "final_train_loss": tail_mean(run.step_loss),
        "eval_loss": run.eval_loss,
        **(pairs if run.eval_metrics else {}),
        "memory_kind": run.memory_kind,
        "steps": len(run.step_elapsed_s),
        "timed_steps": rates.timed_steps,
        "warmup_excluded": rates.warmup_excluded,
        "tokens": sum(run.step_tokens),
        "trained_tokens": sum(run.step_trained_tokens),
        "trainable_params": run.trainable_params,
        "mean_example_tokens": run.mean_example_tokens,
        "loss_curve": [[t, loss] for t, loss in zip(run.step_elapsed_s, run.step_loss) if loss is not None],
    }


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def mismatches(expected: dict, got: dict, prefix: str = "") -> list[str]:
    """Every key of `expected` whose value differs in `got`, as 'key: expected X, got Y'."""
    out = []
    for key, want in expected.items():
        have = got.get(key, "<missing>") if isinstance(got, dict) else "<missing>"
        if isinstance(want, dict) and isinstance(have, dict):
            out += mismatches(want, have, f"{prefix}{key}.")
        elif not _close(want, have):
            out.append(f"{prefix}{key}: expected {want!r}, got {have!r}")
    return out


def expected_settings(recipe: Recipe) -> dict:
    """What the recipe fixes for both routes (target names, example digest and counts are compared route to route)."""
    q = recipe.model.quantization
    preference = matched_preference(recipe, expected_reference(recipe))
    return {
        "base": canonical_base(resolve_base(recipe.model.base).path_or_id),
        "dtype": recipe.model.dtype,
        "quantization": {"bits": q.bits, **({"quant_type": q.quant_type, "double_quant": q.double_quant,
                                             "compute_dtype": q.compute_dtype} if q.bits == 4 else {})},
        "adapter": {"method": recipe.adapter.method, "rank": recipe.adapter.rank, "alpha": float(recipe.adapter.alpha),
                    "dropout": recipe.adapter.dropout},
        "train": matched_train(recipe),
        **({"preference": preference} if preference else {}),
        "data": {"max_length": recipe.data.max_length},
    }


def check_settings(recipe: Recipe, runs: dict[str, list[RouteRun]]) -> list[str]:
    expected = expected_settings(recipe)
    reference = runs["peftkit"][0].settings["matched"]
    found = []
    for route, route_runs in runs.items():
        for i, run in enumerate(route_runs):
            got = run.settings["matched"]
            found += [f"{route} run {i + 1}: {m}" for m in mismatches(expected, got)]
            if route != "peftkit" or i:
                found += [f"{route} run {i + 1} vs peftkit run 1: {m}" for m in mismatches(reference, got)]
    return found


def _launch(route: str, recipe: Recipe, work: Path, index: int) -> RouteRun:
    spec = write_spec(work / f"spec-{route}-{index}.json", recipe, work, index)
    out, log = work / f"{route}-{index}.json", work / f"{route}-{index}.log"
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "peftkit.benchmark.routes", route, str(spec), str(out)],
                              stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        said = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "no output")
        raise PeftkitError(f"bench: the {route} route failed (exit {proc.returncode}): {said.strip()} (log: {log})")
    return RouteRun.from_dict(json.loads(out.read_text()))


def _utilisation(recipe: Recipe, runs: dict[str, list[RouteRun]], medians: dict, probe) -> dict:
    first = runs["peftkit"][0]
    full = tuple(first.settings["matched"]["adapter"]["modules_to_save"])
    shape = model_shape(resolve_base(recipe.model.base).path_or_id, task=recipe.model.task,
                        num_labels=len(recipe.data.label_names or ()) or None, full_modules=full,
                        trust_remote_code=recipe.model.trust_remote_code)
    per_token = flops_per_token(shape, first.trainable_params, first.mean_example_tokens)
    peak = probe.gflops * 1e9
    return {
        "formula": FLOPS_FORMULA,
        "frozen_linear_params": shape.frozen_linear_params, "trainable_params": first.trainable_params,
        "layers": shape.layers, "attn_width": shape.attn_width, "mean_example_tokens": first.mean_example_tokens,
        "flops_per_token": per_token,
        "matmul_probe": {"gflops": probe.gflops, "size": probe.size, "dtype": probe.dtype, "device": probe.device,
                         "threads": probe.threads, "seconds": probe.seconds},
        "mfu": {route: (per_token * m["tokens_per_s"] / peak) if m["tokens_per_s"] else None
                for route, m in medians.items()},
    }


def _goals(ratios: dict, medians: dict) -> dict:
    a, b = medians["peftkit"]["eval_loss"], medians["trl"]["eval_loss"]
    rel = abs(a - b) / abs(b) if a is not None and b else None
    tps, mem = ratios["trained_tokens_per_s"], ratios["peak_memory_mb"]
    return {**GOALS, "eval_loss_rel_diff": rel, "met": {
        "trained_tokens_per_s": tps is not None and tps >= GOALS["trained_tokens_per_s_ratio_min"],
        "peak_memory": mem is not None and mem <= GOALS["peak_memory_ratio_max"],
        "eval_loss": rel is not None and rel <= GOALS["eval_loss_rel_diff_max"],
    }}


def accuracy_noise(p: float, n: int, z: float) -> float:
    """z standard deviations of the difference of two accuracies near p, each measured on n pairs."""
    return z * math.sqrt(2 * p * (1 - p) / max(n, 1))


def _preference_goals(ratios: dict, medians: dict, eval_pairs: int) -> dict:
    g, tps, mem = PREFERENCE_GOALS, ratios["trained_tokens_per_s"], ratios["peak_memory_mb"]
    out = {**g, "eval_pairs": eval_pairs, "met": {
        "trained_tokens_per_s": tps is not None and tps >= g["trained_tokens_per_s_ratio_min"],
        "peak_memory": mem is not None and mem <= g["peak_memory_ratio_max"],
    }}
    for name in ("reward_accuracy", "preference_accuracy"):
        a, b = medians["peftkit"][f"eval_{name}"], medians["trl"][f"eval_{name}"]
        if a is None or b is None:
            out[f"{name}_diff"], out[f"{name}_noise"], out["met"][name] = None, None, False
            continue
        # at least one pair's worth: with both accuracies at 0 or 1 the formula gives 0
        noise = max(accuracy_noise((a + b) / 2, eval_pairs, g["accuracy_noise_z"]), 1 / max(eval_pairs, 1))
        out[f"{name}_diff"], out[f"{name}_noise"] = a - b, noise
        out["met"][name] = abs(a - b) <= noise
    return out


def run_bench(
    recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, vs: str = "trl", repeats: int = 2,
    warmup_steps: int = 2, name: str | None = None, out_dir: str | Path = "benchmarks/results",
    console: Console | None = None, keep_work: bool = False,
) -> BenchResult:
    """Run the recipe with peftkit and with the plain TRL route, `repeats` times each (A B A B), and write
    OUT_DIR/NAME.json, .md and .png. Raises PeftkitError for a recipe the TRL route cannot mirror or a failed route."""
    console = console or Console(stderr=True)
    if vs != "trl":
        raise PeftkitError(f"bench --vs: only 'trl' is supported (got {vs!r})")
    if repeats < 1 or warmup_steps < 0:
        raise PeftkitError("bench: --repeats must be 1 or more and --warmup-steps 0 or more")
    # both routes get this machine's precision choice for every `auto`, so they load the same base the same way
    recipe, precision = resolve_precision(load_recipe(recipe_path, overrides), detect())
    check_comparable(recipe, str(recipe_path))
    name = name or recipe.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise PeftkitError(f"bench --name {name!r}: use letters, digits, '.', '_' or '-' (it names files)")
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise PeftkitError(f"bench needs {', '.join(missing)}: pip install 'peftkit[bench]'")

    machine = machine_info()
    q = recipe.model.quantization
    compute = q.compute_dtype if q.bits == 4 else recipe.model.dtype  # resolved above: no `auto` left
    console.print(f"measuring the {compute} matmul rate (2 s)", highlight=False)
    probe = matmul_rate(dtype=compute)
    work = Path(tempfile.mkdtemp(prefix=f"peftkit-bench-{name}-"))
    runs: dict[str, list[RouteRun]] = {"peftkit": [], vs: []}
    rows: dict[str, list[dict]] = {"peftkit": [], vs: []}
    order = [route for _ in range(repeats) for route in ("peftkit", vs)]
    for k, route in enumerate(order):
        console.print(f"[{k + 1}/{len(order)}] {route} route ...", highlight=False)
        run = _launch(route, recipe, work, len(runs[route]))
        runs[route].append(run)
        rows[route].append(summarize(run, warmup_steps))
        r = rows[route][-1]
        accuracy = (f", reward acc {r['eval_reward_accuracy']:.3f}, preference acc "
                    f"{r['eval_preference_accuracy']:.3f}" if "eval_reward_accuracy" in r else "")
        console.print(f"      {r['wall_s']:.0f} s: {r['trained_tokens_per_s']:.0f} trained tok/s, "
                      f"peak {r['peak_memory_mb']:.0f} MB, eval loss {r['eval_loss']:.4f}{accuracy}", highlight=False)
    machine["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    preference = recipe.train.objective != "sft"
    metrics = METRICS + PREFERENCE_METRICS if preference else METRICS
    medians = {route: {m: median(rows[route], m) for m in metrics} for route in rows}
    ratios = {m: _ratio(medians["peftkit"][m], medians[vs][m]) for m in metrics}
    problems = check_settings(recipe, runs)
    results = {
        "schema": SCHEMA,
        "name": name,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["peftkit", "bench", str(recipe_path), *overrides, "--vs", vs, "--repeats", str(repeats)]),
        "recipe_file": str(recipe_path),
        "overrides": list(overrides),
        "recipe": recipe.model_dump(mode="json"),
        "precision": precision.to_dict(),
        "machine": machine,
        "method": {"order": order, "repeats": repeats, "warmup_steps_excluded": warmup_steps, "statistic": "median",
                   "definitions": {**DEFINITIONS, **PREFERENCE_DEFINITIONS} if preference else DEFINITIONS},
        "routes": {route: {"settings": runs[route][0].settings, "runs": rows[route]} for route in rows},
        "medians": medians,
        "ratios": ratios,
        "settings_check": {"ok": not problems, "mismatches": problems},
        "utilisation": _utilisation(recipe, runs, medians, probe),
    }
    if preference:  # accuracies and margins compare as differences (peftkit - trl): a ratio of accuracies says little
        results["differences"] = {m: _diff(medians["peftkit"][m], medians[vs][m])
                                  for m in ("eval_loss", *PREFERENCE_METRICS)}
        eval_pairs = runs["peftkit"][0].settings["matched"]["data"]["eval_examples"]
        results["goals"] = _preference_goals(ratios, medians, eval_pairs)
    else:
        results["goals"] = _goals(ratios, medians)
    paths = write_results(results, Path(out_dir), name)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return BenchResult(name, *paths, results)
