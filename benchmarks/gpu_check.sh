#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (one H200) after benchmarks/gpu_prepare.sh ran here. Not yet run on a GPU: its length
# there is unmeasured; the step limits (150 s smoke, 330 s bench, plus set-up) keep it inside a 540 s call:
#   device tool: carry [".gpu"], command "bash benchmarks/gpu_check.sh", timeout_s 540
# What it does, in order (benchmarks/README.md, "GPU check", says what each figure means):
#   1. installs the carried wheels into /tmp/site and prints the versions it runs with
#   2. builds a random-init model of SmolLM2-135M's shape (its real weights cannot travel, see gpu_prepare.sh)
#   3. `peftkit doctor --json` -> doctor.json (skipped, saying so, where this checkout has no doctor command)
#   4. a short `peftkit train recipes/quickstart.yaml` on that model (SMOKE_STEPS steps, 8 eval examples): the plain
#      training path on CUDA -> quickstart-smoke.json
#   5. `peftkit bench` of smollm2-qlora-codealpaca against the TRL route (STEPS steps, REPEATS runs per route):
#      trained tokens/s ratio, peak CUDA memory, losses, utilisation vs the bf16 matmul rate measured in the same run
#      -> smollm2-qlora-codealpaca-h200.{json,md,png}
#   6. `peftkit plan --measure --json` on quickstart and smollm2-qlora-codealpaca (-> plan-measure-*.json: measured
#      peak and tokens/s beside the estimate of that batch) and a 2-step quickstart run with train.batch_size=auto,
#      effective batch 16 (-> batch-size-auto.json: the batch chosen and each candidate's measured peak). Up to
#      3 x PLAN_TIMEOUT (60 s) more: with steps 4-5 at their limits, give the call 600 s or run with STEPS lowered.
# A step that fails is reported and the next one still runs; the script exits non-zero if any failed. Everything lands
# in $OUT (the device tool brings it back; gpu_check.log is the whole console), or in RESULTS when set.
#
# DRY_RUN=1 bash benchmarks/gpu_check.sh runs the same steps HERE on the CPU with .venv's python, no wheels and a few
# steps (results in /tmp/gpu-check-dry): it checks the script, not the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=${DRY_RUN:-0}
# step limits in seconds (SMOKE_TIMEOUT, BENCH_TIMEOUT): a hung step must not use up the device time
if [[ $DRY_RUN == 1 ]]; then
  PY=${PYTHON:-.venv/bin/python}; RESULTS=${RESULTS:-/tmp/gpu-check-dry}
  STEPS=${STEPS:-4}; REPEATS=${REPEATS:-1}; SMOKE_STEPS=${SMOKE_STEPS:-2}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}; BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}  # 2 CPU cores: ~4 and ~5 minutes
  PLAN_TIMEOUT=${PLAN_TIMEOUT:-600}
else
  PY=${PYTHON:-python3}; RESULTS=${RESULTS:-${OUT:-benchmarks/results}}
  STEPS=${STEPS:-200}; REPEATS=${REPEATS:-2}; SMOKE_STEPS=${SMOKE_STEPS:-5}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-150}; BENCH_TIMEOUT=${BENCH_TIMEOUT:-330}
  PLAN_TIMEOUT=${PLAN_TIMEOUT:-60}  # each of step 6's three commands (not yet timed on a GPU)
fi
WORK=${WORK:-/tmp/gpu-check}
mkdir -p "$RESULTS" "$WORK"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export DRY_RUN RESULTS WORK
t0=$SECONDS
step() { echo; echo "=== [$((SECONDS - t0)) s] $*"; }

main() {  # every step; its output also goes to gpu_check.log (the heredocs below keep their own indentation)
failed=()

# ---- 1. packages ------------------------------------------------------------------------------------------------
step "packages"
if [[ $DRY_RUN == 1 ]]; then
  export PYTHONPATH="$PWD"
else
  if [[ ! -d .gpu/wheels ]]; then
    echo "error: .gpu/wheels is missing: run 'bash benchmarks/gpu_prepare.sh' on the CPU machine and carry .gpu"
    exit 2
  fi
  $PY -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 12) else f"error: python3 is {v}, the carried wheels are cp312: set DEVICE_PYTHON in gpu_prepare.sh")' || exit 2
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PWD"
fi
$PY - <<'PY' || exit 2
# versions in use, and every carried package's requirements checked against what this machine has (warnings only:
# a mismatch is a likely cause if something below fails)
import importlib.metadata as md
import os
import sys

from packaging.requirements import Requirement

import torch


def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


shown = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "trl", "datasets", "evaluate", "pydantic",
         "tokenizers", "huggingface-hub", "pyarrow", "fsspec", "numpy", "gguf"]
print("python", sys.version.split()[0], "|", " | ".join(f"{n} {version(n)}" for n in shown))
print("cuda:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU)")
carried = ["bitsandbytes", "trl", "datasets", "dill", "multiprocess", "evaluate", "gguf", "peft", "fsspec", "pydantic",
           "pydantic-core", "annotated-types", "typing-inspection"]
for name in carried:
    for req in map(Requirement, md.requires(name) or []):
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        have = version(req.name)
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            print(f"warning: {name} needs {req}, found {have or 'nothing'}")
if os.environ["DRY_RUN"] != "1" and not torch.cuda.is_available():
    sys.exit("error: no CUDA device")
import bitsandbytes, datasets, evaluate, pydantic, trl  # noqa: E401,F401  (fail here, not mid-bench)
PY

# ---- 2. the model ---------------------------------------------------------------------------------------------------
step "random-init SmolLM2-135M"
MODEL="$WORK/smollm2-random"
$PY - "$MODEL" <<'PY' || exit 2
# SmolLM2-135M's architecture and tokenizer with random weights: throughput and memory are those of the real model;
# the losses are not comparable with the CPU results (the same for both routes, so the ratios are).
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

src = Path(".gpu/smollm2") if Path(".gpu/smollm2/config.json").is_file() else None
if src is None:  # dry run without a prepared .gpu: the cached real model's config and tokenizer
    from peftkit.modeling.zoo import pull
    src = pull("smollm2-135m-instruct")
cfg = AutoConfig.from_pretrained(src)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(src).save_pretrained(sys.argv[1])
print("saved", sys.argv[1])
PY
if [[ -f .gpu/code_alpaca_2k.json ]]; then DATA="$PWD/.gpu/code_alpaca_2k.json"
else DATA=$(cd .. && pwd)/shared/data/code_alpaca_2k/code_alpaca_2k.json; fi

# ---- 3. peftkit doctor ----------------------------------------------------------------------------------------------
step "peftkit doctor --json"
if $PY -m peftkit doctor --json > "$WORK/doctor.json" 2> "$WORK/doctor.err"; then
  cp "$WORK/doctor.json" "$RESULTS/doctor.json"
  $PY -c 'import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ("devices", "bitsandbytes", "precision") if k in r}, indent=1))' "$RESULTS/doctor.json"
elif grep -q "invalid choice: 'doctor'" "$WORK/doctor.err"; then
  echo "skipped: this checkout's peftkit has no 'doctor' command (added by a separate change); no doctor.json"
else
  echo "FAILED: peftkit doctor --json exited non-zero:"; tail -n 20 "$WORK/doctor.err"
  failed+=("doctor")
fi

# ---- 4. quickstart smoke run: the plain training path -----------------------------------------------------------------
step "peftkit train recipes/quickstart.yaml, $SMOKE_STEPS steps on the random-init model"
SMOKE_RUN="$WORK/quickstart-smoke"
if timeout "$SMOKE_TIMEOUT" $PY -m peftkit train --force recipes/quickstart.yaml "model.base=$MODEL" \
     "train.max_steps=$SMOKE_STEPS" train.warmup_steps=0 train.log_every=1 \
     eval.max_examples=8 eval.max_new_tokens=8 "output.dir=$SMOKE_RUN"; then
  $PY - "$SMOKE_RUN" "$RESULTS/quickstart-smoke.json" <<'PY' || failed+=("quickstart smoke (result)")
# the run directory's meta.json and metrics.json, cut to what the check is about
import json
import os
import sys
from pathlib import Path

run, dest = Path(sys.argv[1]), Path(sys.argv[2])
meta, metrics = json.loads((run / "meta.json").read_text()), json.loads((run / "metrics.json").read_text())
t = metrics["train"]
summary = {
    "recipe": "recipes/quickstart.yaml", "base": "random-init SmolLM2-135M (same shape as smollm2-135m-instruct)",
    "device": meta["device"], "gpus": meta.get("hardware", {}).get("gpus"), "precision": meta.get("precision"),
    "quantization": meta.get("quantization"), "gradient_checkpointing": meta.get("gradient_checkpointing"),
    "packing": meta.get("packing"), "versions": meta.get("versions"),
    "steps": t["steps"], "loss_curve": t["loss_curve"], "tokens_per_s": t["tokens_per_s"],
    "trained_tokens_per_s": t["trained_tokens_per_s"], "train_s": t["train_s"], "wall_s": t["wall_s"],
    "peak_memory_mb": t["peak_memory_mb"], "peak_memory": t["peak_memory"],
    "skipped_nonfinite": t.get("skipped_nonfinite"), "eval_before": metrics["eval"]["before"],
    "eval_after": metrics["eval"]["after"], "adapter_saved": (run / "adapter" / "adapter_model.safetensors").is_file(),
}
dest.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary[k] for k in ("device", "steps", "tokens_per_s", "peak_memory_mb", "eval_after")}))
if os.environ["DRY_RUN"] != "1" and not str(meta["device"]).startswith("cuda"):
    sys.exit(f"error: the quickstart trained on {meta['device']}, not on CUDA")
if not summary["adapter_saved"] or t["steps"] != len(t["loss_curve"]) or not t["steps"]:
    sys.exit("error: the run directory is incomplete")
PY
else
  echo "FAILED: the quickstart smoke run (exit $?; $SMOKE_TIMEOUT s limit)"; failed+=("quickstart smoke")
fi

# ---- 5. the bench -----------------------------------------------------------------------------------------------------
step "peftkit bench smollm2-qlora-codealpaca vs TRL: $STEPS steps x $REPEATS runs per route"
timeout "$BENCH_TIMEOUT" $PY - "$MODEL" "$DATA" "$STEPS" "$REPEATS" <<'PY' || failed+=("bench")
import os
import re
import sys
from pathlib import Path

from peftkit import bench
from peftkit.errors import PeftkitError

model, data, steps, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
overrides = [f"model.base={model}", f"data.path={data}", f"train.max_steps={steps}"]
if os.environ["DRY_RUN"] == "1":
    overrides += ["eval.max_examples=4"]
name = "smollm2-qlora-codealpaca-" + ("dry-run" if os.environ["DRY_RUN"] == "1" else "h200")
try:
    result = bench("recipes/smollm2-qlora-codealpaca.yaml", overrides, repeats=repeats, name=name,
                       out_dir=os.environ["RESULTS"], keep_work=True)
except PeftkitError as exc:  # a route failed: show the end of its log, which stays in /tmp
    print(f"error: {exc}")
    log = re.search(r"\(log: (.+?)\)$", str(exc))
    if log and Path(log[1]).is_file():
        print("".join(Path(log[1]).read_text(errors="replace").splitlines(keepends=True)[-40:]))
    sys.exit(1)
print(result.md_path.read_text())
r = result.results
print("trained tokens/s ratio (peftkit / TRL):", r["ratios"]["trained_tokens_per_s"],
      "| peak memory ratio:", r["ratios"]["peak_memory_mb"], "| MFU:", r["utilisation"]["mfu"],
      "| matmul probe GFLOP/s:", round(r["utilisation"]["matmul_probe"]["gflops"]))
PY

# ---- 6. plan --measure and train.batch_size auto (issue 16) -----------------------------------------------------------
# 3 real steps on each recipe's longest examples beside plan's estimate of that batch (CUDA: the allocator's peak
# against the estimate without context and slack), then a 2-step run whose micro-batch auto picks by measuring.
step "peftkit plan --measure (quickstart, smollm2-qlora-codealpaca) and train.batch_size=auto on the random-init model"
for name in quickstart smollm2-qlora-codealpaca; do
  data=(); [[ $name == smollm2-qlora-codealpaca ]] && data=("data.path=$DATA")
  if timeout "$PLAN_TIMEOUT" $PY -m peftkit plan "recipes/$name.yaml" "model.base=$MODEL" "${data[@]}" --measure \
       --json > "$RESULTS/plan-measure-$name.json"; then
    $PY - "$RESULTS/plan-measure-$name.json" <<'PY' || failed+=("plan --measure $name (result)")
import json
import sys

m = json.load(open(sys.argv[1]))["measured"]
r = m["measurement"]
print(json.dumps({"device": r["device"], "shape": r["shape"], "peak_mb": round(r["peak_mb"]),
                  "estimate_mb": round(m["estimate_bytes"] / 2**20), "ratio": m["ratio"],
                  "tokens_per_s": round(r["tokens_per_s"])}))
PY
  else
    echo "FAILED: plan --measure $name (exit $?; $PLAN_TIMEOUT s limit)"; failed+=("plan --measure $name")
  fi
done
AUTO_RUN="$WORK/quickstart-batch-auto"
if timeout "$PLAN_TIMEOUT" $PY -m peftkit train --force recipes/quickstart.yaml "model.base=$MODEL" \
     train.batch_size=auto train.effective_batch=16 train.max_steps=2 train.warmup_steps=0 eval.before=false \
     eval.max_examples=8 eval.max_new_tokens=8 "output.dir=$AUTO_RUN"; then
  $PY - "$AUTO_RUN/meta.json" "$RESULTS/batch-size-auto.json" <<'PY' || failed+=("batch_size auto (result)")
import json
import sys

chosen = json.load(open(sys.argv[1]))["batch_size"]
open(sys.argv[2], "w").write(json.dumps(chosen, indent=1) + "\n")
print(json.dumps({k: chosen[k] for k in ("batch_size", "grad_accum", "effective_batch", "cap_mb", "tried")}))
PY
else
  echo "FAILED: the batch_size auto run (exit $?; $PLAN_TIMEOUT s limit)"; failed+=("batch_size auto")
fi

step "done in $((SECONDS - t0)) s; results in $RESULTS:"
ls -la "$RESULTS"
if (( ${#failed[@]} )); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all steps passed"
}

main 2>&1 | tee "$RESULTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
