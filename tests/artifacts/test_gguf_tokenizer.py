"""Reading an HF tokenizer folder into GGUF vocabulary metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from peftkit.errors import PeftkitError
from peftkit.artifacts.gguf_tokenizer import read_vocab

CORPUS = ["hello world, hello there", "the capital of France is Paris 2024", "<think> is not special"] * 5


def _save(folder: Path, pre_tokenizer, *, bos_processor: bool = False, byte_fallback: bool = False) -> Path:
    tok = Tokenizer(models.BPE(byte_fallback=byte_fallback))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos_processor:  # a tokenizer that prepends BOS, as Llama 3's does
        tok.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    hf.add_tokens(["<think>"])  # an added token that is not special: USER_DEFINED in llama.cpp
    hf.save_pretrained(folder)
    return folder


def _gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


def test_tokens_types_and_special_ids(tmp_path):
    folder = _save(tmp_path, _gpt2())
    spec = json.loads((folder / "tokenizer.json").read_text())
    size = len(spec["model"]["vocab"]) + 1 + 3  # + <think> + three padding rows

    vocab = read_vocab(folder, size)

    assert (vocab.model, vocab.pre) == ("gpt2", "gpt-2")
    assert len(vocab.tokens) == len(vocab.token_types) == size
    assert vocab.tokens[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert vocab.token_types[:3] == (3, 3, 3)  # CONTROL
    think = vocab.tokens.index("<think>")
    assert vocab.token_types[think] == 4  # USER_DEFINED
    assert vocab.tokens[-1] == f"[PAD{size - 1}]" and vocab.token_types[-3:] == (5, 5, 5)  # UNUSED
    assert "Ġ" in "".join(vocab.tokens)  # byte-level spelling copied as it is
    assert vocab.merges and all(len(m.split(" ")) == 2 for m in vocab.merges)
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (1, 2, 0)
    assert (vocab.add_bos, vocab.add_eos) == (False, False)
    assert vocab.eos_token == "<|im_end|>"


def test_a_tokenizer_that_prepends_bos_says_so(tmp_path):
    folder = _save(tmp_path, _gpt2(), bos_processor=True)

    assert read_vocab(folder, 400).add_bos is True


def test_digit_splitting_tokenizers_get_the_smollm_name(tmp_path):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()])

    assert read_vocab(_save(tmp_path, pre), 400).pre == "smollm"


def test_a_vocabulary_larger_than_the_model_is_refused(tmp_path):
    folder = _save(tmp_path, _gpt2())

    with pytest.raises(PeftkitError, match="does not fit the model's vocab_size 10"):
        read_vocab(folder, 10)


@pytest.mark.parametrize(
    ("pre", "byte_fallback", "message"),
    [
        (pre_tokenizers.Whitespace(), False, "only byte-level BPE"),
        (pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), _gpt2()]), False, "pre_tokenizer .* not supported"),
        (pre_tokenizers.ByteLevel(add_prefix_space=True), False, "pre_tokenizer .* not supported"),
        (_gpt2(), True, "byte fallback"),
    ],
    ids=["whitespace", "unknown-sequence", "prefix-space", "byte-fallback"],
)
def test_unsupported_tokenizers_are_refused_with_the_file_named(tmp_path, pre, byte_fallback, message):
    folder = _save(tmp_path, pre, byte_fallback=byte_fallback)

    with pytest.raises(PeftkitError, match=message) as err:
        read_vocab(folder, 400)
    assert str(folder / "tokenizer.json") in str(err.value)


def test_a_sentencepiece_folder_is_refused_as_not_supported_yet(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00")

    with pytest.raises(PeftkitError, match="sentencepiece tokenizers are not supported for GGUF export yet"):
        read_vocab(tmp_path, 100)
