"""Private vs non-private LoRA on the same rows and steps: `peftkit train` twice on a recipe with train.privacy, once
as written and once with train.privacy=null; dev metrics, the (epsilon, delta) spent, noise multiplier, steps, time
and peak memory, with the CPU's model and flags beside every figure; then the canary membership attack
(`peftkit eval --privacy-audit`) on both adapters.

    python benchmarks/privacy.py                                          # recipes/minilm-lora-sst2-dp.yaml
    python benchmarks/privacy.py train.max_steps=60 data.limit=2000       # shorter, for a quick look
    python benchmarks/privacy.py --render                                 # the .md again from its .json

Both runs share every setting but train.privacy (rows, steps, expected batch, lr, seed, and the train.canaries
random-label canaries mixed into the rows, as many more held back for the attack). Writes
benchmarks/results/<out>.json and .md (default privacy).
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
DEFAULT_RECIPE = "recipes/minilm-lora-sst2-dp.yaml"


def run_dir_of(recipe: str, name: str) -> Path:
    return ROOT / "runs" / f"{Path(recipe).stem}-{name}"


def run(recipe: str, name: str, overrides: list[str]) -> dict:
    run_dir = run_dir_of(recipe, name)
    cmd = [sys.executable, "-m", "peftkit", "train", recipe, *overrides, "--force", "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    metrics, meta = (json.loads((run_dir / f).read_text()) for f in ("metrics.json", "meta.json"))
    train, spent = metrics["train"], metrics["train"].get("privacy") or {}
    return {
        "run": name,
        "command": "peftkit train " + " ".join(cmd[4:]).replace(str(ROOT) + "/", ""),
        "steps": train["steps"],
        "epsilon": spent.get("epsilon"),
        "delta": spent.get("delta"),
        "noise_multiplier": spent.get("noise_multiplier"),
        "sample_rate": spent.get("sample_rate"),
        "expected_batch": spent.get("expected_batch"),
        "max_grad_norm": spent.get("max_grad_norm"),
        "rows": spent.get("rows") or meta["data"].get("train_rows"),
        "dev": {k: round(v, 4) for k, v in metrics["eval"]["after"].items()},
        "dev_before": {k: round(v, 4) for k, v in (metrics["eval"]["before"] or {}).items()},
        "train_s": round(train["train_s"], 1),
        "wall_s": round(train["wall_s"], 1),
        "peak_memory_mb": round(train["peak_memory_mb"], 1),
        "curve": [{k: c[k] for k in ("step", "loss", "epsilon") if k in c} for c in train["loss_curve"]],
    }


def markdown(result: dict) -> str:
    rows, machine, note, canaries = result["runs"], result["machine"], result["note"], result["canaries"]
    recipe, overrides = result["recipe"], [*result["overrides"], f"train.canaries={canaries}"]
    gap = result["gap_non_private_minus_private"]
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [
        f"# Private vs non-private LoRA: `{recipe}`" + (f" ({' '.join(overrides)})" if overrides else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, flags: {' '.join(machine['cpu_flags'])}. Both runs "
        "share rows, steps, expected batch, lr and seed; the private one is DP-SGD through Opacus (Poisson sampling, "
        "per-example clipping, Gaussian noise, RDP/PRV accountant). wall s: train() from start to end (data, model "
        "load, eval before and after, saving). The guarantee covers the training rows, per row.",
        *(["", note] if note else []),
        "",
        "| run | steps | epsilon | delta | noise multiplier | expected batch / rows | dev accuracy | dev f1 "
        "| dev loss before -> after | other dev metrics before -> after | train s | wall s | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        d = r["dev"]
        others = ", ".join(f"{k} {f(r['dev_before'].get(k), '.4f')} -> {v:.4f}" for k, v in d.items()
                           if k not in ("accuracy", "f1", "loss")) or "-"
        lines.append(
            f"| {r['run']} | {r['steps']} | {f(r['epsilon'], '.3f')} | {f(r['delta'], '.3g')} | "
            f"{f(r['noise_multiplier'], '.4g')} | {r['expected_batch'] or '-'} / {r['rows'] or '-'} | "
            f"{f(d.get('accuracy'), '.4f')} | {f(d.get('f1'), '.4f')} | "
            f"{f(r['dev_before'].get('loss'), '.4f')} -> {f(d.get('loss'), '.4f')} | {others} | {r['train_s']} | "
            f"{r['wall_s']} | {r['peak_memory_mb']} |")
    if "accuracy" in gap:
        verdict = "met" if gap["accuracy"] <= 0.04 else "NOT met"
        lines += ["", f"Dev accuracy, non-private minus private: {gap['accuracy'] * 100:.1f} points (goal: within 4 "
                  f"points at epsilon <= 8: {verdict})."]
    if any("audit" in r for r in rows):
        lines += ["", f"Membership inference on {canaries} trained vs {canaries} held-out random-label "
                  "canaries (loss threshold; advantage = best TPR - FPR, 0 = chance):", "",
                  "| run | advantage | AUC | DP bound on advantage | canary loss trained / held out |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for r in rows:
            a = r["audit"]
            lines.append(f"| {r['run']} | {a['advantage']:.3f} | {a['auc']:.3f} | {f(a['bound'], '.3f')} | "
                         f"{a['member_loss']:.3f} / {a['held_out_loss']:.3f} |")
    lines += ["", "Reproduce: `python benchmarks/privacy.py" + (f" --recipe {recipe}" if recipe != DEFAULT_RECIPE
              else "") + (f" --out {result['out']}" if result.get("out", "privacy") != "privacy" else "")
              + (f" --canaries {canaries}" if canaries != 100 else "")
              + (f" {' '.join(result['overrides'])}" if result["overrides"] else "") + "`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=DEFAULT_RECIPE)
    p.add_argument("--out", default="privacy")
    p.add_argument("--canaries", type=int, default=100, help="train.canaries for both runs; 0: no attack")
    p.add_argument("--note", default="", help="a line for the markdown, e.g. what else ran on the machine")
    p.add_argument("--render", action="store_true",
                   help="only write benchmarks/results/<out>.md again from its .json (e.g. after correcting the note)")
    p.add_argument("overrides", nargs="*", help="recipe overrides for both runs, e.g. train.max_steps=60")
    args = p.parse_args()
    out = ROOT / "benchmarks" / "results"
    if args.render:
        text = markdown(json.loads((out / f"{args.out}.json").read_text()))
        (out / f"{args.out}.md").write_text(text)
        print(text)
        return
    hw = detect()
    machine = {"cpu": hw.cpu_model, "cpu_flags": [f for f, on in hw.isa().items() if on], "cores": os.cpu_count()}
    overrides = [*args.overrides, f"train.canaries={args.canaries}"]
    rows = [run(args.recipe, "private", overrides), run(args.recipe, "non-private", [*overrides, "train.privacy=null"])]
    if args.canaries:
        dirs = [str(run_dir_of(args.recipe, r["run"])) for r in rows]
        cmd = [sys.executable, "-m", "peftkit", "eval", dirs[0], "--compare", dirs[1], "--privacy-audit", "--json"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        for r, a in zip(rows, json.loads(done.stdout)["runs"]):
            r["audit"] = {k: a[k] for k in ("canaries", "advantage", "auc", "bound", "member_loss", "held_out_loss")}
    private, plain = rows
    gap = {k: round(plain["dev"][k] - private["dev"][k], 4) for k in private["dev"] if k in plain["dev"]}
    result = {"script": "benchmarks/privacy.py", "recipe": args.recipe, "out": args.out, "overrides": args.overrides,
              "machine": machine, "note": args.note, "canaries": args.canaries, "gap_non_private_minus_private": gap,
              "runs": rows}
    (out / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
