"""Shared fixtures. The real models come from the offline zoo, pulled once into the default cache
($PEFTKIT_CACHE or ~/.cache/peftkit) so every test session after the first reuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftkit.modeling.zoo import pull


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """HF folder of SmolLM2-135M-Instruct (float32 safetensors, tokenizer with chat template)."""
    return pull("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """HF folder of all-MiniLM-L6-v2 (BERT encoder, 384-d)."""
    return pull("all-minilm-l6-v2")
