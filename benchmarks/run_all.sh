#!/usr/bin/env bash
# Reproduce the recorded CPU benchmarks in benchmarks/results/ (NAME.json, NAME.md, NAME.png for each):
#
#   bash benchmarks/run_all.sh                        # all three shipped benchmarks, 2 runs per route
#   bash benchmarks/run_all.sh quickstart             # one of them
#   REPEATS=3 bash benchmarks/run_all.sh minilm-lora-sst2
#
# Each benchmark runs the recipe as shipped, with peftkit and with the plain TRL route, alternating
# peftkit, trl, peftkit, trl in separate processes. Run it on a quiet machine: the load average before and after
# is recorded in each result, and other work on the same cores moves the token rates.
set -euo pipefail
cd "$(dirname "$0")/.."
PEFTKIT=${PEFTKIT:-.venv/bin/peftkit}
REPEATS=${REPEATS:-2}
ALL=(quickstart smollm2-qlora-codealpaca minilm-lora-sst2)

for name in "${@:-${ALL[@]}}"; do
  echo "== $name: $(cat /proc/loadavg 2>/dev/null || true)"
  "$PEFTKIT" bench "recipes/$name.yaml" --vs trl --repeats "$REPEATS" --out benchmarks/results
done
