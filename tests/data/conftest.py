"""Data-layer fixtures: a small ChatML tokenizer built in memory (no cache needed) and the real SmolLM2 one."""

from __future__ import annotations

import pytest
from support.tiny_run import make_tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

make_fake_tokenizer = make_tokenizer


@pytest.fixture
def fake_tokenizer() -> PreTrainedTokenizerFast:
    return make_fake_tokenizer()


@pytest.fixture(scope="session")
def smol_tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture
def make_tokenizer():
    """The factory, for tests that need another chat template (or none)."""
    return make_fake_tokenizer
