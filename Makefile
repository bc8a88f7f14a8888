# `make demo` and `make test` do all set-up on a fresh machine (Python 3.11, package registries only).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# pip's wheel cache and peftkit's model cache survive between runs, so a second `make` is fast.
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PEFTKIT_CACHE ?= $(HOME)/.cache/peftkit

.PHONY: install install-dev demo test test-fast test-integration clean

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
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/peftkit models pull smollm2-135m-instruct
	$(BIN)/peftkit train recipes/quickstart.yaml --force

test: install-dev
	$(BIN)/python -m pytest -q

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: install-dev
	$(BIN)/python -m pytest -q -m integration

clean:
	rm -rf $(VENV) runs .pytest_cache
