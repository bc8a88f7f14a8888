"""Preference objectives on a recipe, one `peftkit train` per objective, as a user runs them; held-out preference
accuracy and margins before -> after, steps, time and peak memory, with the CPU's flags beside every figure.

    python benchmarks/preference.py                                   # quickstart-dpo: dpo ipo orpo simpo kto
    python benchmarks/preference.py --recipe recipes/smollm2-qlora-hh-dpo.yaml --objectives dpo --out hh-dpo

The quickstart-dpo recipe starts from runs/quickstart (train recipes/quickstart.yaml first). Writes
benchmarks/results/<out>.json and .md; the JSON keeps each run's margin / reward-accuracy curve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from peftkit.hardware import detect

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("reward_accuracy", "preference_accuracy", "reward_margin")


def run(recipe: str, objective: str, overrides: list[str], *, collect: bool) -> dict:
    """Trains (unless `collect`: read a finished run directory of an earlier invocation) and reads the run back."""
    name = f"{Path(recipe).stem}-{objective}"
    run_dir = ROOT / "runs" / name
    cmd = [sys.executable, "-m", "peftkit", "train", recipe, f"train.objective={objective}", *overrides, "--force",
           "--run-dir", str(run_dir)]
    if not collect:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    metrics, meta = (json.loads((run_dir / f).read_text()) for f in ("metrics.json", "meta.json"))
    before, after = metrics["eval"]["before"] or {}, metrics["eval"]["after"]
    return {
        "objective": objective,
        "command": "peftkit train " + " ".join(cmd[4:]).replace(str(ROOT) + "/", ""),
        "steps": metrics["train"]["steps"],
        "wall_s": round(metrics["train"]["wall_s"], 1),  # train(): data, model load, eval before/after, saving
        "train_s": round(metrics["train"]["train_s"], 1),
        "trained_tokens_per_s": round(metrics["train"]["trained_tokens_per_s"], 1),
        "peak_memory_mb": round(metrics["train"]["peak_memory_mb"], 1),
        "held_out_pairs": metrics["eval"]["examples"],
        "before": {k: before.get(k) for k in (*SHOWN, "exact_match") if k in before},
        "after": {k: after.get(k) for k in (*SHOWN, "exact_match") if k in after},
        "reference": meta.get("reference") or {"mode": "none"},
        "precision": {k: v["value"] for k, v in meta["precision"].items()},
        "curve": [{k: p[k] for k in ("step", "loss", "reward_margin", "reward_accuracy") if k in p}
                  for p in metrics["train"]["loss_curve"]],
    }


def _cell(before: dict, after: dict, key: str) -> str:
    if key not in after:
        return "-"
    b = before.get(key)
    return (f"{b:.2f} -> " if b is not None else "") + f"{after[key]:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="recipes/quickstart-dpo.yaml")
    p.add_argument("--objectives", nargs="+", default=["dpo", "ipo", "orpo", "simpo", "kto"])
    p.add_argument("--out", default="preference")
    p.add_argument("--collect", nargs="*", default=[], metavar="OBJECTIVE",
                   help="objectives whose finished run directories are read instead of trained again")
    p.add_argument("--note", default="", help="a line for the markdown, e.g. what else ran on the machine")
    p.add_argument("overrides", nargs="*", help="recipe overrides for every run, e.g. train.max_steps=10")
    args = p.parse_args()
    hw = detect()
    machine = {"cpu": hw.cpu_model, "cpu_flags": [f for f, on in hw.isa().items() if on], "cores": os.cpu_count()}
    rows = [run(args.recipe, o, args.overrides, collect=o in args.collect) for o in args.objectives]
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.out}.json").write_text(json.dumps(
        {"script": "benchmarks/preference.py", "recipe": args.recipe, "overrides": args.overrides,
         "machine": machine, "note": args.note, "runs": rows}, indent=2) + "\n")
    lines = [
        f"# Preference objectives on `{args.recipe}`" + (f" ({' '.join(args.overrides)})" if args.overrides else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, flags: {' '.join(machine['cpu_flags'])}. "
        "Held-out pairs, before -> after training. reward accuracy: the implicit reward (policy vs reference "
        "log-ratio, or the reference-free reward of orpo/simpo) ranks the chosen answer first; preference accuracy: "
        "the model's own summed log-probability of the chosen answer is the higher. wall s: train() from start to "
        "end (data, model load, reference precompute, eval before and after, saving).",
        *(["", args.note] if args.note else []),
        "",
        "| objective | steps | wall s | train s | trained tok/s | peak MB | reward accuracy | preference accuracy "
        "| reward margin | exact match | reference | precision (weights / 4-bit compute / autocast) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        pr, ref = r["precision"], r["reference"]
        ref_text = "none" if ref["mode"] == "none" else f"{ref['model']} ({ref['mode']})"
        lines.append(
            f"| {r['objective']} | {r['steps']} | {r['wall_s']} | {r['train_s']} | {r['trained_tokens_per_s']} | "
            f"{r['peak_memory_mb']} | {_cell(r['before'], r['after'], 'reward_accuracy')} | "
            f"{_cell(r['before'], r['after'], 'preference_accuracy')} | "
            f"{_cell(r['before'], r['after'], 'reward_margin')} | {_cell(r['before'], r['after'], 'exact_match')} | "
            f"{ref_text} | {pr['model_dtype']} / {pr['compute_dtype']} / {pr['mixed_precision']} |")
    lines += ["", "Margin and reward accuracy over training (logged steps):", ""]
    for r in rows:
        points = ", ".join(f"{c['step']}: {c.get('reward_margin', 0):.2f} / {c.get('reward_accuracy', 0):.2f}"
                           for c in r["curve"])
        lines.append(f"- {r['objective']} (step: margin / reward accuracy): {points}")
    lines += ["", f"Reproduce: `python benchmarks/preference.py --recipe {args.recipe} --objectives "
              f"{' '.join(args.objectives)} --out {args.out}" + (f" {' '.join(args.overrides)}" if args.overrides
                                                                 else "") + "`"]
    (out / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
