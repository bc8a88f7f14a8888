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
                  task: str = "causal_lm", objective: str = "sft") -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # pads are masked out anyway
    if objective != "sft":
        if packing:
            raise ValueError("preference answers are scored one per row: packing does not apply")
        if objective == "kto":
            return lambda rows: collate_items(rows, pad_id, pad_to_multiple_of)
        return lambda rows: collate_pairs(rows, pad_id, pad_to_multiple_of)
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


# ---- preference batches. "answer_index" numbers every answer of the split (pair i: 2i chosen, 2i + 1 rejected;
# unpaired row i: i), so reference log-probs computed once can be looked up per answer.


def collate_pairs(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Chosen answers in rows 0..B-1, rejected in B..2B-1: one forward scores both."""
    batch = collate_padded([r["chosen"] for r in rows] + [r["rejected"] for r in rows], pad_id, pad_to_multiple_of)
    index = [r["index"] for r in rows]
    batch["answer_index"] = torch.tensor([2 * i for i in index] + [2 * i + 1 for i in index], dtype=torch.long)
    batch["pairs"] = torch.tensor(len(rows))
    return batch


def collate_items(rows: list[dict], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """KTO items: unpaired rows as they are, pairs split into a desirable and an undesirable answer (chosen first,
    so pair metrics can still be read). "kl_*": each item's prompt with another row's answer (with_kl_partners),
    KTO's estimate of the policy/reference divergence."""
    if "chosen" in rows[0]:
        items = [(r["chosen"], True, 2 * r["index"], r["kl"][0]) for r in rows]
        items += [(r["rejected"], False, 2 * r["index"] + 1, r["kl"][1]) for r in rows]
    else:
        items = [(r, r["desirable"], r["index"], r["kl"][0]) for r in rows]
    batch = collate_padded([seq for seq, *_ in items], pad_id, pad_to_multiple_of)
    batch["desirable"] = torch.tensor([d for _, d, _, _ in items], dtype=torch.bool)
    batch["answer_index"] = torch.tensor([a for _, _, a, _ in items], dtype=torch.long)
    kl = collate_padded([k for *_, k in items], pad_id, pad_to_multiple_of)
    batch.update({f"kl_{k}": v for k, v in kl.items()})
    if "chosen" in rows[0]:
        batch["pairs"] = torch.tensor(len(rows))
    return batch


def with_kl_partners(rows: list[dict], max_length: int) -> list[dict]:
    """Rows with "kl": per answer, this row's prompt followed by the same answer slot of the next row (the last
    row takes the first's): a fixed mismatch, so its reference log-prob can be computed once like the others."""
    def answers(row: dict) -> list[dict]:
        return [row["chosen"], row["rejected"]] if "chosen" in row else [row]

    out = []
    for i, row in enumerate(rows):
        partner = rows[(i + 1) % len(rows)]
        kl = []
        for own, other in zip(answers(row), answers(partner)):
            cut, other_cut = row["prompt_len"], partner["prompt_len"]
            ids = (own["input_ids"][:cut] + other["input_ids"][other_cut:])[:max_length]
            labels = ([IGNORE] * cut + other["labels"][other_cut:])[:max_length]
            kl.append({"input_ids": ids, "labels": labels})
        out.append({**row, "kl": tuple(kl)})
    return out
