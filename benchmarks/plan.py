"""How close `peftkit plan` comes to the memory real steps take: estimate vs `--measure` peak, three settings per recipe.

    python benchmarks/plan.py                        # the quickstart, Code Alpaca and MiniLM recipes, 9 rows
    python benchmarks/plan.py --recipes quickstart   # one recipe's three rows

Each row is `peftkit plan RECIPE <overrides> --measure --json` in a process of its own (so a CPU resident-set
peak is that row's own): a few optimizer steps on the recipe's longest examples, beside the config-only estimate
of that same batch (peftkit.planning.compare: the live tensors' peak against the estimate's held + train lines, as
torch.cuda.max_memory_allocated is on a GPU; on CPU also the process's RSS peak against the estimate with its
process-baseline line). Settings: recompute off and on at the recipe's micro-batch, and recompute off at half of
it. Writes benchmarks/results/plan.{json,md}; the issue's goal is every tensor ratio within 0.85-1.15.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _rows import ROOT, machine, write_results

from peftkit import load_recipe

RECIPES = {
    "quickstart": ROOT / "recipes" / "quickstart.yaml",
    "smollm2-qlora-codealpaca": ROOT / "recipes" / "smollm2-qlora-codealpaca.yaml",
    "minilm-lora-sst2": ROOT / "recipes" / "minilm-lora-sst2.yaml",
}
GOAL = (0.85, 1.15)
# published peaks for a setting a shipped GPU recipe can be set to: (source, recipe, overrides, GiB)
PUBLISHED = [
    ("torchtune README (Llama-3.1-8B QLoRA, batch 2, packed to 2,048, activation checkpointing, RTX 4090)",
     "recipes/gpu/llama-3.1-8b-qlora.yaml",
     ["adapter.rank=8", "adapter.alpha=16", "adapter.dropout=0.0", "train.batch_size=2", "train.grad_accum=1",
      "train.effective_batch=null", "data.max_length=2048", "data.packing=true", "train.gradient_checkpointing=true"],
     7.4),
]


def settings(batch: int) -> list[tuple[str, list[str]]]:
    half = max(batch // 2, 1)
    return [
        (f"recompute off, batch {batch}", ["train.gradient_checkpointing=false"]),
        (f"recompute on, batch {batch}", ["train.gradient_checkpointing=true"]),
        (f"recompute off, batch {half}", ["train.gradient_checkpointing=false", f"train.batch_size={half}"]),
    ]


def measured_row(recipe: str, what: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "peftkit", "plan", str(RECIPES[recipe]), *overrides, "--measure", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row = {"recipe": recipe, "setting": what, "overrides": overrides, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        return {**row, "error": (proc.stderr.strip().splitlines() or ["(no output)"])[-1]}
    plan = json.loads(proc.stdout)
    measured = plan["measured"]
    m = measured["measurement"]
    return {**row, "device": m.get("device"), "shape": m.get("shape"), "peak_mb": round(m["peak_mb"]),
            "peak_kind": m.get("peak_kind"), "baseline_mb": round(m.get("baseline_mb") or 0),
            "tensor_peak_mb": round(m["tensor_peak_mb"]), "estimate_mb": round(measured["estimate_bytes"] / 2**20),
            "ratio": measured["ratio"], "process_estimate_mb": round(measured["process_estimate_bytes"] / 2**20),
            "process_ratio": measured["process_ratio"],
            "tokens_per_s": round(m.get("tokens_per_s") or 0, 1), "plan_peak_mb": round(plan["peak_bytes"] / 2**20),
            "estimate_overrides": measured.get("estimate_overrides")}


def published_rows() -> list[dict]:
    """The plan (config only, CUDA) for each published setting, beside the published figure."""
    from peftkit import plan

    rows = []
    for source, recipe, overrides, gib in PUBLISHED:
        got = plan(load_recipe(ROOT / recipe, overrides), device="cuda").to_dict()
        rows.append({"source": source, "recipe": recipe, "overrides": overrides, "published_gib": gib,
                     "allocated_gib": round(got["allocated_bytes"] / 2**30, 2),
                     "peak_gib": round(got["peak_bytes"] / 2**30, 2)})
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lo, hi = GOAL
    out = [
        "# peftkit plan: estimate vs measured peak",
        "",
        f"`{result['command']}`: each row `peftkit plan RECIPE <setting> --measure --json` in its own process; "
        "the measured batch is the recipe's longest examples, and the estimate is planned for that batch "
        "(its longest example as max_length). Tensor ratio = the live tensors' measured peak (weights, adapter, "
        "optimizer state, gradients, activations, workspaces: the CPU allocator's own count, as "
        "torch.cuda.max_memory_allocated on a GPU) / the estimate's held + train lines; goal "
        f"{lo:.2f}-{hi:.2f}. Process ratio = the resident-set peak / that estimate plus its process-baseline line: "
        "it also holds what glibc's heap keeps after frees, which the plan does not model.",
        "",
        f"Machine: {m['cpu']} (flags: {' '.join(m['cpu_flags'])}), {m['torch_threads']} torch threads, torch {m['torch']}"
        f"{', ' + m['cuda'] if m['cuda'] else ''}; load average {m['load_average']}; {m['date']}.",
        "",
        "| recipe | setting | batch (rows x tokens) | tensors MB | estimate MB | tensor ratio | within goal "
        "| process RSS MB | estimate + baseline MB | process ratio | baseline MB | tok/s |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        if "error" in r:
            out.append(f"| {r['recipe']} | {r['setting']} | error: {r['error']} | | | | | | | | | |")
            continue
        shape = " x ".join(str(x) for x in r["shape"]) if r.get("shape") else ""
        ok = "yes" if lo <= r["ratio"] <= hi else "no"
        process = f"{r['process_ratio']:.2f}" if r.get("process_ratio") is not None else "-"
        out.append(f"| {r['recipe']} | {r['setting']} | {shape} | {r['tensor_peak_mb']:,} | {r['estimate_mb']:,} | "
                   f"{r['ratio']:.2f} | {ok} | {r['peak_mb']:,} | {r['process_estimate_mb']:,} | {process} | "
                   f"{r['baseline_mb']:,} | {r['tokens_per_s']:,.0f} |")
    out += ["", "Published figures beside the plan of the same setting (config only, CUDA; allocated = held + "
            "max(train, eval), peak adds the CUDA context and allocator slack):", "",
            "| source | recipe and overrides | published GiB | plan allocated GiB | plan peak GiB |",
            "| --- | --- | ---: | ---: | ---: |"]
    for r in result["published"]:
        out.append(f"| {r['source']} | `{r['recipe']} {' '.join(r['overrides'])}` | {r['published_gib']} | "
                   f"{r['allocated_gib']} | {r['peak_gib']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--name", default="plan", help="results file stem under benchmarks/results")
    args = parser.parse_args()
    rows = []
    for name in args.recipes:
        batch = load_recipe(RECIPES[name]).train.batch_size
        for what, overrides in settings(batch):
            rows.append(measured_row(name, what, overrides))
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"command": "python benchmarks/plan.py " + " ".join(sys.argv[1:]), "machine": machine(), "rows": rows,
              "published": published_rows()}
    write_results(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
