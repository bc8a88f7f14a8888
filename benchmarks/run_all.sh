#!/usr/bin/env bash
# Reproduce the recorded CPU benchmarks in benchmarks/results/ (NAME.json, NAME.md, NAME.png for each):
#
#   bash benchmarks/run_all.sh                        # the peftkit-vs-TRL benches, 2 runs per route
#   bash benchmarks/run_all.sh quickstart             # one of them
#   REPEATS=3 bash benchmarks/run_all.sh minilm-lora-sst2
#
# Each bench runs the recipe with peftkit and with the plain TRL route, alternating peftkit, trl, peftkit, trl in
# separate processes, for the steps below (the recipes' full lengths take hours on 2 CPU cores; the rates settle
# within a few steps). Run it on a quiet machine: the load average before and after is recorded in each result,
# and other work on the same cores moves the token rates.
#
# The other scripts here write their own results: adapters.py, levers.py, merge_export.py, quickstart_plain_peft.py,
# sst2_lora_vs_full.py, serve.py (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PEFTKIT=${PEFTKIT:-.venv/bin/peftkit}
REPEATS=${REPEATS:-2}
ALL=(smollm2-qlora-codealpaca quickstart minilm-lora-sst2 smollm2-qlora-hh-dpo)
declare -A STEPS=([smollm2-qlora-codealpaca]=20 [quickstart]=20 [minilm-lora-sst2]=40 [smollm2-qlora-hh-dpo]=12)

for name in "${@:-${ALL[@]}}"; do
  echo "== $name: $(cat /proc/loadavg 2>/dev/null || true)"
  "$PEFTKIT" bench "recipes/$name.yaml" "train.max_steps=${STEPS[$name]}" --vs trl --repeats "$REPEATS" \
    --out benchmarks/results
done
