#!/usr/bin/env bash
# `make demo` on a fresh clone, timed; writes benchmarks/results/demo.json and demo.md with the CPU's flags.
#
#   bash benchmarks/demo.sh                  # as a user runs it: precision auto (bf16 only on AVX512-BF16/AMX CPUs)
#   DEMO_OVERRIDES="model.dtype=float32 model.quantization.compute_dtype=float32" LABEL=fp32 bash benchmarks/demo.sh
#                                            # what auto picks on a CPU without AVX512-BF16/AMX, forced on this one
#
# The clone gets its own venv (pip's wheel cache stays warm) and an empty model cache, so the model pull and
# conversion are inside the figure. Rows are appended to the results, one per run, labelled.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LABEL=${LABEL:-auto}
WORK=$(mktemp -d /tmp/peftkit-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
git clone -q "$REPO" "$WORK/fresh"
start=$(date +%s.%N)
( cd "$WORK/fresh" && make demo PEFTKIT_CACHE="$WORK/cache" DEMO_OVERRIDES="${DEMO_OVERRIDES:-}" ) 2>&1 | tee "$WORK/demo.log"
end=$(date +%s.%N)
"$REPO/.venv/bin/python" - "$WORK" "$start" "$end" "$LABEL" "${DEMO_OVERRIDES:-}" <<'PY'
import json, sys
from pathlib import Path

from peftkit.hardware import detect

work, start, end, label, overrides = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
run = work / "fresh" / "runs" / "quickstart"
metrics, meta = (json.loads((run / f).read_text()) for f in ("metrics.json", "meta.json"))
hw = detect()
row = {
    "label": label,
    "command": "git clone <repo> fresh && cd fresh && make demo PEFTKIT_CACHE=<empty folder>"
               + (f" DEMO_OVERRIDES='{overrides}'" if overrides else ""),
    "wall_clock_s": round(end - start, 1),
    "exact_match_before": metrics["eval"]["before"]["exact_match"],
    "exact_match_after": metrics["eval"]["after"]["exact_match"],
    "held_out_examples": metrics["eval"]["examples"],
    "train_steps": metrics["train"]["steps"],
    "train_s": round(metrics["train"]["train_s"], 1),
    "tokens_per_s": round(metrics["train"]["tokens_per_s"], 1),
    "eval_share": round(metrics["train"]["eval_share"], 3),
    "precision": {k: v["value"] for k, v in meta["precision"].items()},
    "cpu": hw.cpu_model,
    "cpu_flags": [f for f, on in hw.isa().items() if on],
    "cores": __import__("os").cpu_count(),
}
out = Path("benchmarks/results")
path = out / "demo.json"
old = json.loads(path.read_text()) if path.is_file() else {}
rows = [r for r in old.get("runs", []) if r.get("label") != label] + [row]
path.write_text(json.dumps({"script": "benchmarks/demo.sh", "runs": rows}, indent=2) + "\n")
lines = ["| run | make demo wall clock | exact match before -> after | steps | train s | tokens/s | eval share | precision "
         "(weights / 4-bit compute / autocast) | CPU, flags |",
         "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |"]
for r in rows:
    p = r["precision"]
    m, s = divmod(r["wall_clock_s"], 60)
    lines.append(f"| {r['label']} | {int(m)} min {s:.0f} s | {r['exact_match_before']:.2f} -> "
                 f"{r['exact_match_after']:.2f} ({r['held_out_examples']} held out) | {r.get('train_steps', '?')} | {r['train_s']} | "
                 f"{r['tokens_per_s']} | {r['eval_share']:.0%} | {p['model_dtype']} / {p['compute_dtype']} / "
                 f"{p['mixed_precision']} | {r['cpu']}, {r['cores']} cores: {' '.join(r['cpu_flags'])} |")
(out / "demo.md").write_text("\n".join(lines) + "\n\nReproduce: `bash benchmarks/demo.sh` (see its header).\n")
print("\n".join(lines))
PY
