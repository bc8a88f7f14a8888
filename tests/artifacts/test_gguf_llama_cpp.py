"""Our GGUF files, read by llama.cpp itself (opt-in: needs the `llama` extra, which builds llama.cpp from source).

transformers' GGUF loader (test_gguf.py) is a second reader written against the same spec; llama.cpp is the one
users run. Without llama-cpp-python installed this module is skipped.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from support.gguf_models import CHAT, F16_RTOL, Q8_RTOL, logits, save_model
from transformers import AutoModelForCausalLM

from peftkit.artifacts.gguf import write_gguf

llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: make test-llama-cpp builds it")


def _llama_cpp_logits(gguf_file: Path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=128, n_threads=1, logits_all=True, verbose=False)
    with closing(llm):
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize(
    ("arch", "tied"), [("llama", False), ("llama", True), ("qwen2", False), ("mistral", False)],
    ids=["llama", "llama-tied", "qwen2", "mistral"],
)
def test_llama_cpp_computes_the_same_logits_as_the_merged_folder(tmp_path, tokenizer, arch, tied):
    hf_dir = save_model(tmp_path / "merged", tokenizer, arch=arch, tied=tied)
    out = tmp_path / "gguf" / "model.gguf"
    write_gguf(hf_dir, out, gguf_type="f16")
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt)["input_ids"]

    expected = logits(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(), ids)
    expected = expected[:, : len(tokenizer)].numpy()  # llama.cpp's vocabulary is the tokenizer's, not the padding
    got = _llama_cpp_logits(out, ids)[:, : len(tokenizer)]
    error = np.abs(got - expected).max()
    assert error < F16_RTOL * np.abs(expected).max()  # measured 0.0028 of the largest logit for each architecture
    # the same next token wherever it is not a near tie that f16 rounding may flip
    top2 = np.sort(expected, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * error
    assert clear.mean() > 0.8  # so the token check below covers most of the prompt
    assert (got.argmax(-1) == expected.argmax(-1))[clear].all()


def test_llama_cpp_runs_the_q8_0_file_within_its_tolerance(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer, tied=True)
    out = tmp_path / "gguf" / "model-q8_0.gguf"
    write_gguf(hf_dir, out, gguf_type="q8_0")
    ids = tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))["input_ids"]

    expected = logits(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(), ids)
    expected = expected[:, : len(tokenizer)].numpy()
    got = _llama_cpp_logits(out, ids)[:, : len(tokenizer)]
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert F16_RTOL < error < Q8_RTOL


def test_llama_cpp_tokenizes_like_the_tokenizer_and_stops_at_end_of_turn(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    out = tmp_path / "gguf" / "model.gguf"
    write_gguf(hf_dir, out, gguf_type="f16")
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=128, n_threads=1, vocab_only=True, verbose=False)
    with closing(llm):
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=False)
        for text in (prompt, "Hello world! How are you today?", "  two  spaces\nand 12345"):
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text
        # a lost stop token is the "talks forever" bug: llama.cpp must see <|im_end|> as end of generation
        assert llama_cpp.llama_vocab_is_eog(vocab, tokenizer.convert_tokens_to_ids("<|im_end|>"))
        assert not llama_cpp.llama_vocab_is_eog(vocab, tokenizer.convert_tokens_to_ids("<|im_start|>"))
