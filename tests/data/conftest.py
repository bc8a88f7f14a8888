"""Data-layer fixtures: a small ChatML tokenizer built in memory (no cache needed) and the real SmolLM2 one."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from peftkit.data.templates import NAMED_TEMPLATES

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you!",
    "Write a function that adds two numbers: def add(a, b): return a + b",
    "user assistant system tool instruction input output response",
    "0123456789 {} [] () <> \"quotes\" 'single' - _ = + * / \\ | ; : , .",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_fake_tokenizer(chat_template: str | None = NAMED_TEMPLATES["chatml"]) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few sentences: every string encodes; ids 0-2 are the ChatML specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token=None,
                                   additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    fast.chat_template = chat_template
    return fast


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
