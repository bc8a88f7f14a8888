"""Finished tiny run directories to merge and export: trained once per test session (a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_models import byte_level_tokenizer
from support.tiny_run import tiny_recipe, write_base, write_chat
from transformers import PreTrainedTokenizerFast

import peftkit


def _train(root: Path, name: str, **sections) -> Path:
    base, data = root / "base", root / "chat.jsonl"
    if not base.exists():
        write_base(base)
        write_chat(data)
    run = root / name
    # lr 5e-2: three steps move the adapter far enough from zero that a wrong merge shows in the logits.
    peftkit.train(tiny_recipe(base, data, run, train={"max_steps": 3, "lr": 5e-2}, eval={"before": False},
                              **sections))
    return run


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-runs")


@pytest.fixture(scope="session")
def fp32_run(tiny_root) -> Path:
    """An un-quantized fp32 run on a local 2-layer Llama with a ChatML byte-level BPE tokenizer."""
    return _train(tiny_root, "run-fp32")


@pytest.fixture(scope="session")
def nf4_run(tiny_root) -> Path:
    """The same recipe on the base loaded in 4-bit NF4 (bitsandbytes' CPU path), bf16 compute."""
    # compute dtype written out: `auto` would pick float32 on a CPU without AVX512-BF16, bf16 elsewhere
    return _train(tiny_root, "run-nf4", model={"quantization": {"bits": 4, "compute_dtype": "bfloat16"}})


@pytest.fixture(scope="session")
def pissa_run(tiny_root) -> Path:
    """An fp32 LoRA started with PiSSA: loading the adapter moves the base's principal part into it."""
    return _train(tiny_root, "run-pissa", adapter={"init": "pissa"})


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML specials, GPT-2 style like SmolLM2's: what the GGUF tests export."""
    return byte_level_tokenizer()
