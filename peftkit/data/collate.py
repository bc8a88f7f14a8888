"""Batches. Unpacked: right-padded rows. Packed: one padding-free row per batch, examples kept apart.

How packed examples stay apart: position_ids restart at 0 for each example and no attention_mask is passed.
transformers (5.x) reads the restarts as example boundaries and builds a block-diagonal causal mask for sdpa,
eager and flex attention, and varlen kernels for flash-attention; RoPE sees each example from position 0.
The model must be called with use_cache=False: with a cache, transformers skips the packed-sequence detection
and the examples would attend to each other (tests/data/test_packing.py proves both behaviours).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .bundle import IGNORE

CLASSIFICATION_TASKS = ("classification", "sequence_classification")


def make_collator(tokenizer, *, packing: bool, pad_to_multiple_of: int | None = None,
                  task: str = "causal_lm") -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # pads are masked out anyway
    if task in CLASSIFICATION_TASKS:
        if packing:
            raise ValueError("packing applies to causal LM batches, not classification")
        return lambda rows: collate_classification(rows, pad_id, pad_to_multiple_of)
    if packing:
        return lambda rows: collate_packed(rows, pad_id, pad_to_multiple_of)
    return lambda rows: collate_padded(rows, pad_id, pad_to_multiple_of)


def _padded_length(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def collate_padded(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    width = _padded_length(max(len(r["input_ids"]) for r in rows), pad_to_multiple_of)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.tensor(r["labels"], dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """input_ids / labels / position_ids of shape (1, total tokens). The first label of every example is IGNORE,
    so no example is predicted from the end of the previous one."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for r in rows:
        n = len(r["input_ids"])
        ids += r["input_ids"]
        labels += [IGNORE, *r["labels"][1:]]
        positions += range(n)
    extra = _padded_length(len(ids), pad_to_multiple_of) - len(ids)
    if extra:  # a filler "example" of pads: its own block, never trained
        ids += [pad_id] * extra
        labels += [IGNORE] * extra
        positions += range(extra)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
    }


def collate_classification(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    width = _padded_length(max(len(r["input_ids"]) for r in rows), pad_to_multiple_of)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if "token_type_ids" in rows[0] else None
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
        if types is not None:
            types[i, :n] = torch.tensor(r["token_type_ids"], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}
    if types is not None:
        batch["token_type_ids"] = types
    return batch
