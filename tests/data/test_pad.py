from __future__ import annotations

import pytest

from peftkit.data import ensure_pad_token


def test_missing_pad_is_never_a_stop_token(fake_tokenizer):
    assert fake_tokenizer.pad_token is None
    pad = ensure_pad_token(fake_tokenizer, stop_token_ids=(2,))
    assert pad == fake_tokenizer.pad_token_id == fake_tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_pad_equal_to_eos_is_replaced(fake_tokenizer):
    fake_tokenizer.pad_token = fake_tokenizer.eos_token
    assert ensure_pad_token(fake_tokenizer, stop_token_ids=()) != fake_tokenizer.eos_token_id


def test_a_safe_pad_is_kept(fake_tokenizer):
    fake_tokenizer.pad_token = "<|im_start|>"
    assert ensure_pad_token(fake_tokenizer, stop_token_ids=(2,)) == 1


def test_new_pad_token_as_last_resort(fake_tokenizer):
    n = len(fake_tokenizer)
    pad = ensure_pad_token(fake_tokenizer, stop_token_ids=(0, 1, 2))
    assert pad == n and fake_tokenizer.pad_token == "<|pad|>" and len(fake_tokenizer) == n + 1


@pytest.mark.integration
def test_smollm2_pad_is_not_im_end(smol_tokenizer):
    import copy

    tok = copy.deepcopy(smol_tokenizer)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = ensure_pad_token(tok, stop_token_ids=(im_end,))
    assert pad != im_end and pad < len(tok)
