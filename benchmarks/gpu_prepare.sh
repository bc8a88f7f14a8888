#!/usr/bin/env bash
# Run HERE (the CPU machine, with network to PyPI) before benchmarks/gpu_check.sh runs on the device machine.
#
# The device machine has torch, transformers, peft, accelerate, pyarrow, pandas, matplotlib, rich, pyyaml and psutil,
# but no bitsandbytes, trl, datasets, evaluate or pydantic, and no network. This puts into .gpu/ (ignored by git
# through .git/info/exclude): wheels of the missing packages at the versions of this .venv, SmolLM2-135M's config
# and tokenizer (not its weights: a call carries 64 MiB and the bitsandbytes wheel alone is 43 MB, so gpu_check.sh
# builds a random-init model of the same shape), and the Code Alpaca data. Then call the device tool with
#   carry: [".gpu"], command: "bash benchmarks/gpu_check.sh", timeout_s: 540
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/smollm2

specs=()
for pkg in bitsandbytes trl datasets dill multiprocess evaluate \
           pydantic pydantic-core annotated-types typing-inspection; do
  specs+=("$pkg==$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${specs[@]}"

base=$($PY -c "from peftkit.modeling.zoo import pull; print(pull('smollm2-135m-instruct'))")
find "$base" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu/smollm2/ \;
cp ../shared/data/code_alpaca_2k/code_alpaca_2k.json .gpu/
du -sh .gpu  # must stay under 64 MiB with the rest of the working tree
