#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (one H200) after benchmarks/gpu_prepare.sh ran here; under 8 minutes:
#   carry: [".gpu"], command: "bash benchmarks/gpu_check.sh", timeout_s: 540
# It installs the carried wheels, builds a random-init model of SmolLM2-135M's shape (its real weights cannot travel,
# see gpu_prepare.sh), and runs `peftkit bench` on smollm2-qlora-codealpaca (4-bit NF4, LoRA r=16 all-linear, max
# length 512) against the TRL route: CUDA 4-bit training in both routes, max_memory_allocated as peak memory, and
# utilisation against the bf16 matmul rate measured on the GPU. Results land in $OUT (the device tool brings them
# back) or benchmarks/results; copy them into benchmarks/results/ and say in benchmarks/README.md when they were made.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-benchmarks/results}
STEPS=${STEPS:-200}
REPEATS=${REPEATS:-2}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .gpu/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

python3 - <<'PY'
import bitsandbytes, datasets, peft, torch, transformers, trl
assert torch.cuda.is_available(), "no CUDA device"
print("device", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| transformers", transformers.__version__,
      "| peft", peft.__version__, "| trl", trl.__version__, "| bitsandbytes", bitsandbytes.__version__,
      "| datasets", datasets.__version__, flush=True)
PY

python3 - <<'PY'
# SmolLM2-135M's architecture and tokenizer with random weights: throughput and memory are those of the real model;
# the losses are not comparable with the CPU results (same for both routes, so the ratios are).
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

cfg = AutoConfig.from_pretrained(".gpu/smollm2")
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained("/tmp/smollm2-random")
AutoTokenizer.from_pretrained(".gpu/smollm2").save_pretrained("/tmp/smollm2-random")
PY

python3 - "$RESULTS" "$STEPS" "$REPEATS" <<'PY'
import sys
from pathlib import Path

from peftkit.benchmark import run_bench

results, steps, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
overrides = ["model.base=/tmp/smollm2-random", f"data.path={Path('.gpu/code_alpaca_2k.json').resolve()}",
             f"train.max_steps={steps}"]
result = run_bench("recipes/smollm2-qlora-codealpaca.yaml", overrides, repeats=repeats,
                   name="smollm2-qlora-codealpaca-h200", out_dir=results)
print(result.md_path.read_text())
PY
