# `make demo` and `make test` do all set-up on a fresh machine (Python 3.11, package registries only).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# pip's wheel cache and peftkit's model cache survive between runs, so a second `make` is fast.
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PEFTKIT_CACHE ?= $(HOME)/.cache/peftkit

.PHONY: install install-dev chromium demo test test-fast test-integration test-llama-cpp clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the CPU build that lies on local disk: a bare `torch` would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,bench,serve,tensorboard,trackio,report,ui]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# DEMO_OVERRIDES: recipe overrides, e.g. benchmarks/demo.sh forcing fp32 to time what `auto` picks on other CPUs
demo: install
	$(BIN)/peftkit models pull smollm2-135m-instruct
	$(BIN)/peftkit train recipes/quickstart.yaml $(DEMO_OVERRIDES) --force

# the browser tests (tests/reporting, tests/dashboard) drive Debian's chromium headless through Playwright
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: install-dev chromium
	$(BIN)/python -m pytest -q

test-fast: install-dev chromium
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: install-dev
	$(BIN)/python -m pytest -q -m integration

# Opt-in: llama.cpp itself loads and runs our GGUF files. Builds llama-cpp-python from source (~6 min on
# 2 cores). GGML_NATIVE=OFF targets any AVX2 CPU: a build tuned to the host can use instructions a VM then
# refuses (SIGILL). No wheel cache, so a natively built wheel cached earlier is not picked up instead.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
test-llama-cpp: install-dev
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir -e ".[llama]"
	$(BIN)/python -m pytest -q tests/artifacts/test_gguf_llama_cpp.py

clean:
	rm -rf $(VENV) runs .pytest_cache
