"""Tiny models and a short run of the real training loop (peftkit.training.loop.fit) for the adapter tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.adapters import param_groups
from peftkit.recipe.schema import AdapterSpec, TrainSpec
from peftkit.training.batches import Batches
from peftkit.training.loop import FitState, fit
from peftkit.training.optim import build_optimizer, build_scheduler

VOCAB = 64


def make_tiny_llama(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """Hidden 64, 2 layers; the same weights on every call (seeded), so a fresh copy is the same base."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.2)
    return LlamaForCausalLM(cfg).to(dtype)


def make_rows(n: int = 8, length: int = 12) -> list[dict]:
    """A 4-token random prompt (not trained) and a fixed reply: learnable in a few steps."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        prompt = torch.randint(3, VOCAB, (4,), generator=g).tolist()
        ids = prompt + [10 + j % 3 for j in range(length - 4 - i % 3)]
        rows.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})
    return rows


def collate(rows: list[dict]) -> dict:
    width = max(len(r["input_ids"]) for r in rows)

    def pad(seq: list[int], value: int) -> list[int]:
        return seq + [value] * (width - len(seq))

    return {
        "input_ids": torch.tensor([pad(r["input_ids"], 0) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        "labels": torch.tensor([pad(r["labels"], -100) for r in rows]),
    }


def run_fit(model, adapter: AdapterSpec, *, steps: int = 6, lr: float = 1e-2, rows: list[dict] | None = None,
            batch_size: int = 4) -> FitState:
    """`steps` optimizer steps of the real loop, with the optimizer groups the session builds."""
    spec = TrainSpec(max_steps=steps, batch_size=batch_size, lr=lr, log_every=1, schedule="constant")
    rows = rows or make_rows()
    sampler = Batches(len(rows), spec.batch_size, spec.seed)
    loader = DataLoader(rows, batch_sampler=sampler, collate_fn=collate)
    optimizer = build_optimizer(param_groups(model, adapter, spec.lr, spec.weight_decay), spec)
    return fit(model, optimizer, build_scheduler(optimizer, spec), iter(loader), Accelerator(cpu=True),
               spec, FitState())


@pytest.fixture
def tiny_llama() -> Callable[..., LlamaForCausalLM]:
    return make_tiny_llama


@pytest.fixture
def train_batch() -> dict:
    return collate(make_rows(4))


@pytest.fixture
def probe_batch() -> dict:
    """Inputs for comparing logits (no labels)."""
    batch = collate(make_rows(4))
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.fixture
def train_steps() -> Callable[..., FitState]:
    return run_fit
