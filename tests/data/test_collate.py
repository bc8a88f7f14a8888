"""Unpacked and classification batches (packing has its own proof in test_packing.py)."""

from __future__ import annotations

import pytest
import torch

from peftkit.data import IGNORE, make_collator

ROWS = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "prompt_ids": [5], "reference": "x"},
        {"input_ids": [8, 9], "labels": [IGNORE, 9]}]


def test_padded_batch(fake_tokenizer):
    fake_tokenizer.pad_token = "<|endoftext|>"
    batch = make_collator(fake_tokenizer, packing=False)(ROWS)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]  # pads never carry loss


def test_pad_to_multiple(fake_tokenizer):
    batch = make_collator(fake_tokenizer, packing=False, pad_to_multiple_of=4)(ROWS)
    assert batch["input_ids"].shape == (2, 4) and batch["labels"][:, 3].eq(IGNORE).all()


def test_packed_batch_from_make_collator(fake_tokenizer):
    batch = make_collator(fake_tokenizer, packing=True)(ROWS)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]


def test_classification_batch(fake_tokenizer):
    rows = [{"input_ids": [1, 2, 3], "labels": 1, "token_type_ids": [0, 0, 1]}, {"input_ids": [4], "labels": 0,
                                                                                  "token_type_ids": [0]}]
    batch = make_collator(fake_tokenizer, packing=False, task="sequence_classification")(rows)
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="packing applies to causal LM"):
        make_collator(fake_tokenizer, packing=True, task="sequence_classification")
