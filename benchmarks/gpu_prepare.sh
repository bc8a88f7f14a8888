#!/usr/bin/env bash
# Run HERE (the CPU machine, with network to PyPI) before benchmarks/gpu_check.sh runs on the device machine.
#
# The device machine (one H200) has Python 3.12 with torch, transformers, peft, accelerate, pyarrow, pandas,
# matplotlib, rich, pyyaml, psutil, xxhash, jinja2 and requests, and no network. Of peftkit's own dependencies
# (pyproject.toml) it lacks bitsandbytes, datasets, evaluate, gguf and pydantic; the bench also needs trl. This puts
# into .gpu/ (ignored by git through .git/info/exclude):
#   - cp312 wheels of those, with their dependencies the device lacks (dill, multiprocess, pydantic-core,
#     annotated-types, typing-inspection), at the versions of this .venv; also peft (peftkit needs 0.21.x, the
#     device's version is not known), typing-extensions (pydantic-core needs >= 4.16) and fsspec (datasets caps it)
#   - SmolLM2-135M's config and tokenizer, not its weights: a call carries 64 MiB and the bitsandbytes wheel alone is
#     43 MB, so gpu_check.sh builds a random-init model of the same shape
#   - the Code Alpaca data
# Then call the device tool with carry [".gpu"] (benchmarks/README.md, "GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}  # the device machine's python3 (3.12.3 when last seen there)
LIMIT=$((64 * 1024 * 1024))           # what one device call may carry: working tree + carried folders

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/smollm2

specs=()
for pkg in bitsandbytes trl datasets dill multiprocess evaluate gguf peft fsspec \
           pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  specs+=("$pkg==$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")")
done
echo "wheels for Python $DEVICE_PYTHON: ${specs[*]}"
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${specs[@]}" 2> >(grep -v "is ignored: it is neither" >&2)

base=$($PY -c "from peftkit.modeling.zoo import pull; print(pull('smollm2-135m-instruct'))")
find "$base" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu/smollm2/ \;
cp ../shared/data/code_alpaca_2k/code_alpaca_2k.json .gpu/

# Everything that travels must stay under 64 MiB: tracked and untracked-not-ignored files, plus .gpu.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
gpu=$(du -sb .gpu | cut -f1)
du -sh .gpu
echo "travels: working tree $((tree / 1024 / 1024)) MiB + .gpu $((gpu / 1024 / 1024)) MiB = $(((tree + gpu) / 1024 / 1024)) MiB of 64"
if (( tree + gpu > LIMIT )); then
  echo "error: over the 64 MiB a device call carries; drop a wheel or clean untracked files" >&2
  exit 1
fi
