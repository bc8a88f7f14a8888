"""Each speed / memory lever of a peftkit step, measured alone and together on the same Code Alpaca batches:
what peftkit's defaults keep, and what they leave off.

    python benchmarks/levers.py               # about 12 min on 2 CPU cores
    python benchmarks/levers.py --steps 10

Every row is `peftkit train recipes/smollm2-qlora-codealpaca.yaml` (SmolLM2-135M 4-bit NF4, LoRA r=16 all-linear,
max length 512, batch 8) for the same steps over the same examples in the same order, in a process of its own.
Time is that of steps 2..N (step 1 warms up); peak memory is the process's peak RSS, eval included. Writes
benchmarks/results/levers.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _rows import ROOT, machine, train_row, write_results

RECIPE = ROOT / "recipes" / "smollm2-qlora-codealpaca.yaml"
SHARED = ["train.log_every=1", "eval.before=false", "eval.metrics=[loss]", "eval.max_examples=32"]
OFF = ["data.packing=false", "train.gradient_checkpointing=false", "model.attn_implementation=eager"]

# name -> (what it is, overrides on top of SHARED)
ROWS: dict[str, tuple[str, list[str]]] = {
    "plain": ("padded batches, no checkpointing, eager attention", OFF),
    "sdpa": ("plain + sdpa attention", [*OFF, "model.attn_implementation=sdpa"]),
    "checkpointing": ("plain + gradient checkpointing", [*OFF, "train.gradient_checkpointing=true"]),
    "packing": ("plain + padding-free packing", [*OFF, "data.packing=true"]),
    "defaults": ("peftkit defaults (packing auto, checkpointing auto, attention auto)", []),
    "defaults_eager": ("defaults + eager attention", ["model.attn_implementation=eager"]),
    "defaults_bf16": ("defaults + bf16 autocast", ["train.mixed_precision=bf16"]),
    "defaults_one_chunk": ("defaults, trained positions' logits all at once", ["train.logits_chunk=null"]),
    "defaults_full_logits": ("defaults, logits at every position", ["train.selective_logits=false"]),
}


def _steps_after_first(row: dict) -> float:
    curve = row["loss_curve"]
    return curve[-1]["elapsed_s"] - curve[0]["elapsed_s"]


def markdown(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    base = next((r for r in rows if r["name"] == "plain" and "error" not in r), None)
    out = [
        "# Speed and memory levers on Code Alpaca (SmolLM2-135M-Instruct 4-bit NF4, LoRA r=16 all-linear)",
        "",
        f"`{result['command'].strip()}`: {result['steps']} steps x batch 8, max length 512, the same examples in the "
        f"same order in every row, each row a process of its own. Time: steps 2..{result['steps']}. Peak: the "
        "process's peak RSS (model load and a 32-example eval loss included).",
        "",
        f"Machine: {m['cpu']}, {m['torch_threads']} torch threads, torch {m['torch']}; load average "
        f"{m['load_average']} before, {result['load_after']} after; {m['date']}.",
        "",
        "| row | what | checkpointing | packing | time s | vs plain | peak MB | vs plain | final train loss | eval loss |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['name']} | {r['label']} | failed: {r['error']} | | | | | | | |")
            continue
        t = _steps_after_first(r)
        gc = r["gradient_checkpointing"] or {}
        vs_t = f"{t / _steps_after_first(base):.2f}x" if base else ""
        vs_m = f"{r['peak_memory_mb'] / base['peak_memory_mb']:.2f}x" if base else ""
        out.append(f"| {r['name']} | {r['label']} | {'on' if gc.get('enabled') else 'off'} | "
                   f"{'on' if r['packing'] else 'off'} | {t:.1f} | {vs_t} | {r['peak_memory_mb']:,} | {vs_m} | "
                   f"{r['final_train_loss']:.4f} | {r['eval_loss_after']:.4f} |")
    auto = next((r["gradient_checkpointing"]["why"] for r in rows if r["name"] == "defaults" and "error" not in r), None)
    if auto:
        out += ["", f"Checkpointing in the defaults row: {auto}."]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", nargs="+", choices=list(ROWS))
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-levers")
    args = parser.parse_args(argv)
    before = machine()
    rows = []
    for name in args.only or list(ROWS):
        label, overrides = ROWS[name]
        print(f"== {name}: {' '.join(overrides) or '(defaults)'}", flush=True)
        row = {"name": name, "label": label, "overrides": overrides,
               **train_row(RECIPE, [*SHARED, f"train.max_steps={args.steps}", *overrides], args.workdir / name)}
        if "error" in row:
            print(f"   failed: {row['error']}", flush=True)
        else:
            print(f"   {_steps_after_first(row):.1f} s, peak {row['peak_memory_mb']} MB", flush=True)
        rows.append(row)
    result = {"command": "python benchmarks/levers.py " + " ".join(argv), "recipe": str(RECIPE.relative_to(ROOT)),
              "steps": args.steps, "machine": before, "load_after": machine()["load_average"], "rows": rows}
    write_results("levers" if args.only is None else "levers-partial", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
