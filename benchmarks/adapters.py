"""Every adapter method, and every quantization, on the same Code Alpaca run: what each costs and what it learns.

    python benchmarks/adapters.py                        # all rows; about 20 min on 2 CPU cores
    python benchmarks/adapters.py --only lora ia3 nf4    # some rows (names as in ROWS below)
    python benchmarks/adapters.py --steps 40             # longer runs

Each row is `peftkit train recipes/smollm2-qlora-codealpaca.yaml` with that row's overrides plus the shared ones
below (same examples, order, steps, batch, max length, seed and eval examples for every row), run as a process of
its own so its peak memory is its own. Methods run on the recipe's 4-bit NF4 base where PEFT and bitsandbytes allow
it; the others (LoHa, LoKr, AdaLoRA, PiSSA) on the un-quantized bf16 base, as recipe validation tells the user to.
The learning rate is the recipe's 2e-4 for the LoRA-like methods and the usual higher rate for methods that train
far fewer parameters (IA3, VeRA, prompt and prefix tuning), as their papers and PEFT's examples do.

Writes benchmarks/results/adapters.{json,md}. Run on a quiet machine: token rates move with other work on the cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _rows import RESULTS, ROOT, machine, train_row, write_results

RECIPE = ROOT / "recipes" / "smollm2-qlora-codealpaca.yaml"

SHARED = ["data.max_length=256", "train.batch_size=4", "train.warmup_steps=2", "train.log_every=1",
          "eval.metrics=[loss]", "eval.max_examples=32", "eval.before=true"]
UNQUANTIZED = ["model.quantization.bits=null"]
FP32_BASE = ["model.dtype=float32"]  # IA3 on a 4-bit base (see adapter validation)

# name -> (group, what it is, overrides)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "lora": ("method", "LoRA r=16, 4-bit NF4 + double quant", []),
    "dora": ("method", "DoRA r=16", ["adapter.method=dora"]),
    "rslora": ("method", "rsLoRA r=16", ["adapter.method=rslora"]),
    "lora_plus": ("method", "LoRA+ (B at 16x lr)", ["adapter.lora_plus_ratio=16"]),
    "lora_gaussian": ("method", "LoRA, gaussian init", ["adapter.init=gaussian"]),
    "lora_olora": ("method", "LoRA, OLoRA init", ["adapter.init=olora"]),
    "lora_loftq": ("method", "LoRA, LoftQ init", ["adapter.init=loftq"]),
    "lora_pissa": ("method", "LoRA, PiSSA init (bf16 base)", ["adapter.init=pissa", *UNQUANTIZED]),
    "ia3": ("method", "IA3 (fp32 non-quantized parts)", ["adapter.method=ia3", "adapter.dropout=0", "train.lr=3e-3",
                                                         *FP32_BASE]),
    "vera": ("method", "VeRA r=256", ["adapter.method=vera", "adapter.rank=256", "train.lr=1e-2"]),
    "loha": ("method", "LoHa r=8 (bf16 base)", ["adapter.method=loha", "adapter.rank=8", "adapter.alpha=16",
                                                 "adapter.dropout=0", *UNQUANTIZED]),
    "lokr": ("method", "LoKr r=8 (bf16 base)", ["adapter.method=lokr", "adapter.rank=8", "adapter.alpha=16",
                                                 "adapter.dropout=0", *UNQUANTIZED]),
    "adalora": ("method", "AdaLoRA r=16 from 24 (bf16 base)", ["adapter.method=adalora", "adapter.adalora_tinit=4",
                                                               "adapter.adalora_tfinal=4", *UNQUANTIZED]),
    "oft": ("method", "OFT block 32", ["adapter.method=oft", "adapter.dropout=0"]),
    # butterfly factors > 1 need PEFT's CUDA kernel (recipe validation says so on CPU)
    "boft": ("method", "BOFT block 32, 1 butterfly factor", ["adapter.method=boft", "adapter.dropout=0"]),
    "prompt_tuning": ("method", "prompt tuning, 20 virtual tokens", ["adapter.method=prompt_tuning",
                                                                     "adapter.dropout=0", "train.lr=3e-2"]),
    "prefix_tuning": ("method", "prefix tuning, 20 virtual tokens", ["adapter.method=prefix_tuning",
                                                                     "adapter.dropout=0", "train.lr=1e-2"]),
    # quantization: LoRA r=16 all-linear on each base; "lora" above is the NF4 + double quant row
    "nf4_no_dq": ("quant", "4-bit NF4, no double quant", ["model.quantization.double_quant=false"]),
    "fp4": ("quant", "4-bit FP4 + double quant", ["model.quantization.quant_type=fp4"]),
    "int8": ("quant", "8-bit LLM.int8", ["model.quantization.bits=8"]),
    "bf16": ("quant", "bf16, not quantized", [*UNQUANTIZED]),
}
QUANT_ROWS = ("lora", "nf4_no_dq", "fp4", "int8", "bf16")


def run_row(name: str, steps: int, workdir: Path) -> dict:
    group, label, overrides = ROWS[name]
    print(f"== {name}: {' '.join(overrides) or '(recipe as is)'}", flush=True)
    got = train_row(RECIPE, [*SHARED, f"train.max_steps={steps}", *overrides], workdir / name)
    row = {"name": name, "group": group, "label": label, "overrides": overrides, "lr": _lr(overrides), **got}
    if "error" in row:
        print(f"   failed: {row['error']}", flush=True)
    else:
        print(f"   eval loss {row['eval_loss_before']:.4f} -> {row['eval_loss_after']:.4f}, "
              f"{row['tokens_per_s']} tok/s, peak {row['peak_memory_mb']} MB", flush=True)
    return row


def _lr(overrides: list[str]) -> float:
    for o in overrides:
        if o.startswith("train.lr="):
            return float(o.split("=", 1)[1])
    return 2e-4  # the recipe's


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f}" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def markdown(result: dict) -> str:
    rows, m = result["rows"], result["machine"]
    out = [
        "# Adapter methods and quantization on Code Alpaca (SmolLM2-135M-Instruct)",
        "",
        f"`python benchmarks/adapters.py --steps {result['steps']}`: every row is `peftkit train "
        f"recipes/smollm2-qlora-codealpaca.yaml` with `{' '.join(result['shared_overrides'])}` and its own overrides; "
        f"same examples, order, steps ({result['steps']} x batch 4), seed and {rows[0].get('eval_examples', 32)} held-out "
        "examples for eval loss. Each row ran in its own process (peak memory = its peak RSS, model load and eval included).",
        "",
        f"Machine: {m['cpu']}, {m['torch_threads']} torch threads, torch {m['torch']}; load average "
        f"{m['load_average']} before, {result['load_after']} after; {m['date']}.",
        "",
        "## Methods",
        "",
        "| method | overrides | lr | trainable params | adapter file MB | tokens/s | peak MB | eval loss before | after | change |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["group"] != "method":
            continue
        if "error" in r:
            out.append(f"| {r['label']} | `{' '.join(r['overrides'])}` | | failed: {r['error']} | | | | | | |")
            continue
        change = 100 * (r["eval_loss_after"] - r["eval_loss_before"]) / r["eval_loss_before"]
        out.append(
            f"| {r['label']} | `{' '.join(r['overrides']) or '-'}` | {r['lr']:g} | {r['trainable_params']:,} | "
            f"{_mb(r['adapter_bytes'])} | {r['tokens_per_s']:.0f} | {r['peak_memory_mb']:,} | "
            f"{r['eval_loss_before']:.4f} | {r['eval_loss_after']:.4f} | {change:+.1f}% |"
        )
    out += ["", "## Quantization (LoRA r=16 all-linear, lr 2e-4)", "",
            "| base | tokens/s | peak MB | eval loss before | after | after vs bf16 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    by_name = {r["name"]: r for r in rows}
    ref = by_name.get("bf16")
    for name in QUANT_ROWS:
        r = by_name.get(name)
        if r is None or "error" in r:
            if r is not None:
                out.append(f"| {r['label']} | failed: {r['error']} | | | | |")
            continue
        gap = "" if ref is None or "error" in ref else \
            f"{100 * (r['eval_loss_after'] - ref['eval_loss_after']) / ref['eval_loss_after']:+.2f}%"
        label = "4-bit NF4 + double quant" if name == "lora" else r["label"]
        out.append(f"| {label} | {r['tokens_per_s']:.0f} | {r['peak_memory_mb']:,} | {r['eval_loss_before']:.4f} | "
                   f"{r['eval_loss_after']:.4f} | {gap} |")
    if result.get("qlora_finding"):
        out += ["", result["qlora_finding"]]
    for rerun in result.get("reruns", []):
        out += ["", f"Rows re-run later with `{rerun}` (their machine line is in the JSON)."]
    return "\n".join(out) + "\n"


def qlora_finding(rows: list[dict]) -> str | None:
    by_name = {r["name"]: r for r in rows if "error" not in r}
    if "lora" not in by_name or "bf16" not in by_name:
        return None
    nf4, bf16 = by_name["lora"]["eval_loss_after"], by_name["bf16"]["eval_loss_after"]
    gap = 100 * (nf4 - bf16) / bf16
    verdict = "matches" if abs(gap) <= 1.0 else "does not match"
    return (f"QLoRA check: NF4 + double quantization ends at eval loss {nf4:.4f} vs {bf16:.4f} for bf16 LoRA "
            f"({gap:+.2f}%): on this run it {verdict} 16-bit LoRA within 1%.")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="rows to run (default: all)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-adapters")
    parser.add_argument("--update", action="store_true",
                        help="with --only: replace those rows in results/adapters.json (same --steps) and rewrite it")
    args = parser.parse_args(argv)
    before = machine()
    rows = [run_row(name, args.steps, args.workdir) for name in args.only or list(ROWS)]
    if args.update and args.only:
        result = json.loads((RESULTS / "adapters.json").read_text())
        if result["steps"] != args.steps:
            raise SystemExit(f"--update: results/adapters.json ran {result['steps']} steps, not {args.steps}")
        new = {r["name"]: {**r, "rerun": before} for r in rows}
        result["rows"] = [new.pop(r["name"], r) for r in result["rows"]] + list(new.values())
        result["reruns"] = [*result.get("reruns", []), "python benchmarks/adapters.py " + " ".join(argv)]
        result["qlora_finding"] = qlora_finding(result["rows"])
        write_results("adapters", result, markdown(result))
        return
    result = {
        "command": "python benchmarks/adapters.py " + " ".join(argv),
        "recipe": str(RECIPE.relative_to(ROOT)), "steps": args.steps, "shared_overrides": SHARED,
        "machine": before, "load_after": machine()["load_average"], "rows": rows,
    }
    result["qlora_finding"] = qlora_finding(rows)
    write_results("adapters" if args.only is None else "adapters-partial", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
