"""Packing proof on a tiny fp32 Llama: packed rows give each example exactly its solo logits (no attention
across examples, positions restarting), and the packed loss equals the token-weighted unpacked loss."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.data import IGNORE
from peftkit.data.collate import collate_packed, collate_padded

VOCAB = 97


def tiny_llama(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=256,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).float().eval()


def examples() -> list[dict]:
    """Four examples of different lengths; the first part of each is a prompt (untrained)."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for n, prompt in ((7, 3), (12, 5), (5, 1), (9, 4)):
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return rows


def test_packed_row_layout():
    rows = examples()
    batch = collate_packed(rows, pad_id=0)
    assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert "attention_mask" not in batch
    starts = [0]
    for r in rows[:-1]:
        starts.append(starts[-1] + len(r["input_ids"]))
    positions = batch["position_ids"][0].tolist()
    assert [positions[s] for s in starts] == [0, 0, 0, 0]
    assert all(batch["labels"][0, s].item() == IGNORE for s in starts)  # never predicted from the previous example


def test_pad_to_multiple_adds_untrained_block():
    rows = examples()[:2]
    batch = collate_packed(rows, pad_id=0, pad_to_multiple_of=8)
    assert batch["input_ids"].shape[1] == 24  # 19 tokens -> 24
    assert batch["labels"][0, 19:].eq(IGNORE).all()
    assert batch["position_ids"][0, 19:].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_each_packed_example_sees_only_itself(attn):
    model, rows = tiny_llama(attn), examples()
    batch = collate_packed(rows, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, atol=1e-5, rtol=1e-5)
            start += n


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_token_weighted_unpacked_loss(attn):
    model, rows = tiny_llama(attn), examples()
    packed = collate_packed(rows, pad_id=0)
    padded = collate_padded(rows, pad_id=0)
    with torch.no_grad():
        loss_packed = model(**packed, use_cache=False).loss
        loss_padded = model(**padded, use_cache=False).loss
        # the same number by hand: sum of per-token losses over all trained tokens / their count
        total, count = 0.0, 0
        for r in rows:
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1]
            target = torch.tensor(r["labels"][1:])
            keep = target != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    assert abs(loss_packed.item() - loss_padded.item()) < 1e-4
    assert abs(loss_packed.item() - total / count) < 1e-4


def test_a_kv_cache_disables_packing_detection():
    """Why the training loop must pass use_cache=False: with a cache, transformers treats the packed row as one
    sequence and later examples attend to earlier ones. If this starts failing, transformers changed the rule."""
    model, rows = tiny_llama("sdpa"), examples()
    batch = collate_packed(rows, pad_id=0)
    with torch.no_grad():
        isolated = model(**batch, use_cache=False).logits
        leaky = model(**batch, use_cache=True).logits
    n0 = len(rows[0]["input_ids"])
    torch.testing.assert_close(isolated[0, :n0], leaky[0, :n0])  # the first example has nothing before it
    assert not torch.allclose(isolated[0, n0:], leaky[0, n0:], atol=1e-4)
