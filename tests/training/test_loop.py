"""fit() on a tiny Llama: loss falls, only adapter weights move, accumulation is token-weighted."""

import copy

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.adapters import attach_adapter, param_report
from peftkit.recipe.schema import AdapterSpec, TrainSpec
from peftkit.training.batches import Batches
from peftkit.training.loop import FitState, fit
from peftkit.training.optim import build_optimizer, build_scheduler


def tiny_llama(dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.2)  # a frozen head with 0.02-std rows caps logits near 0.6
    return LlamaForCausalLM(cfg).to(dtype)


def examples(n=16, length=12):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        prompt = torch.randint(3, 64, (4,), generator=g).tolist()
        ids = prompt + [10 + j % 3 for j in range(length - 4 - i % 4)]  # a fixed reply: learnable in a few steps
        labels = [-100] * 4 + ids[4:]  # prompt of 4 tokens is not trained
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def collate(rows):
    width = max(len(r["input_ids"]) for r in rows)
    pad = lambda seq, v: seq + [v] * (width - len(seq))  # noqa: E731
    return {
        "input_ids": torch.tensor([pad(r["input_ids"], 0) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        "labels": torch.tensor([pad(r["labels"], -100) for r in rows]),
    }


def run(spec: TrainSpec, model, data):
    accelerator = Accelerator(cpu=True)
    sampler = Batches(len(data), spec.batch_size, spec.seed)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], spec)
    sched = build_scheduler(opt, spec)
    return fit(model, opt, sched, iter(loader), accelerator, spec, FitState())


def test_loss_falls_and_base_weights_are_bit_identical():
    base = tiny_llama()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    model = attach_adapter(base, AdapterSpec(rank=8, dropout=0.0), task="causal_lm")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state = run(TrainSpec(max_steps=30, batch_size=4, lr=1e-2, log_every=5), model, examples())
    assert state.curve[-1]["loss"] < state.curve[0]["loss"] * 0.8
    assert state.step == 30 and state.trained_tokens > 0
    merged_names = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                    for k, v in model.state_dict().items() if "lora_" not in k}
    for name, value in frozen.items():
        assert torch.equal(merged_names[name], value), name
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved and all("lora_" in n for n in moved)


def test_adapter_weights_are_fp32_on_a_bf16_base():
    model = attach_adapter(tiny_llama(torch.bfloat16), AdapterSpec(rank=4), task="causal_lm")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    report = param_report(model)
    assert 0 < report.trainable < report.total
    assert report.trainable == sum(p.numel() for p in trainable)


def test_accumulation_matches_one_big_batch():
    """grad_accum=2 x batch 4 must give the same update as batch 8: the loss is token-weighted over the window."""
    data = examples(8)
    a = attach_adapter(tiny_llama(), AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    b = copy.deepcopy(a)
    # lora_B starts at zero, so give the test something to differentiate through
    for m in (a, b):
        torch.manual_seed(3)
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
    for m in (a, b):
        torch.manual_seed(3)
    run(TrainSpec(max_steps=1, batch_size=8, grad_accum=1, lr=1e-2, max_grad_norm=None, seed=5), a, data)
    run(TrainSpec(max_steps=1, batch_size=4, grad_accum=2, lr=1e-2, max_grad_norm=None, seed=5), b, data)
    pa = dict(a.named_parameters())
    for n, p in b.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, pa[n], rtol=1e-5, atol=1e-6)


def test_batch_order_is_a_function_of_seed_and_position():
    s = Batches(10, 3, seed=7)
    it = iter(s)
    full = [next(it) for _ in range(12)]  # 3 epochs of 4 batches, the last of each short
    assert [len(b) for b in full[:4]] == [3, 3, 3, 1]
    assert sorted(i for b in full[:4] for i in b) == list(range(10))
    assert full[:4] != full[4:8]  # reshuffled each epoch
    s.start_at(5)
    loader = DataLoader(list(range(10)), batch_sampler=s, collate_fn=lambda x: x)
    resumed = iter(loader)
    assert [next(resumed) for _ in range(7)] == full[5:]


def test_processes_share_out_the_global_batch_order():
    """Rank r of W takes global micro-batches r, r+W, ...: together they see one process's order, from any start."""
    one = iter(Batches(10, 3, seed=7))
    full = [next(one) for _ in range(12)]
    for start in (0, 4, 5):
        ranks = []
        for r in range(2):
            b = Batches(10, 3, seed=7, rank=r, world=2)
            b.start_at(start)
            ranks.append(iter(b))
        merged = [next(ranks[k % 2]) for k in range(12 - start - (12 - start) % 2)]
        assert merged == full[start : start + len(merged)]


def test_non_finite_loss_stops_with_step_number():
    from peftkit.errors import TrainingAborted

    model = attach_adapter(tiny_llama(), AdapterSpec(rank=4), task="causal_lm")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n:
                p.fill_(float("nan"))
    with pytest.raises(TrainingAborted, match="at step 1"):
        run(TrainSpec(max_steps=3, batch_size=4), model, examples())
