"""LoRA+ parameter groups and AdaLoRA's per-step rank allocation."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from peftkit.adapters import after_optimizer_step, attach_adapter, param_groups
from peftkit.errors import RecipeError
from peftkit.recipe.schema import AdapterSpec

LR = 1e-3


def deltas(model, run) -> tuple[float, float]:
    """Largest |change| of any lora_A and of any lora_B entry over `run()`."""
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    run()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters() if p.requires_grad}
    return (max(v for n, v in moved.items() if ".lora_A." in n), max(v for n, v in moved.items() if ".lora_B." in n))


def test_without_lora_plus_one_group_holds_every_trainable_parameter(tiny_llama):
    spec = AdapterSpec(rank=4)
    model = attach_adapter(tiny_llama(), spec, task="causal_lm")
    (group,) = param_groups(model, spec, LR, 0.01)
    assert (group["lr"], group["weight_decay"]) == (LR, 0.01)
    assert len(group["params"]) == sum(1 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("ratio", [None, 16.0])
def test_lora_plus_moves_b_at_ratio_times_the_learning_rate(ratio, tiny_llama, train_steps):
    spec = AdapterSpec(rank=4, dropout=0.0, lora_plus_ratio=ratio)
    model = attach_adapter(tiny_llama(), spec, task="causal_lm")
    groups = param_groups(model, spec, LR, 0.0)
    assert len(groups) == (1 if ratio is None else 2)
    # B starts at zero, so A gets no gradient on the first step; Adam's first step moves each entry by ~lr
    moved_a, moved_b = deltas(model, lambda: train_steps(model, spec, steps=1, lr=LR))
    assert moved_a == 0.0
    assert moved_b == pytest.approx(LR * (ratio or 1.0), rel=1e-3)


def test_adalora_prunes_ranks_after_each_step_and_the_adapter_reloads(tiny_llama, train_batch, probe_batch,
                                                                    tmp_path):
    steps = 8
    spec = AdapterSpec(method="adalora", rank=2, adalora_init_rank=4, adalora_tinit=1, adalora_tfinal=2, dropout=0.0)
    model = attach_adapter(tiny_llama(), spec, task="causal_lm", total_steps=steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(1, steps + 1):  # the order fit() keeps: backward, step, re-allocate, zero_grad
        model(**train_batch).loss.backward()
        optimizer.step()
        after_optimizer_step(model, step)
        optimizer.zero_grad(set_to_none=True)
    ranks = model.peft_config["default"].rank_pattern
    assert ranks, "no rank budget was applied"
    kept = sum(sum(mask) for mask in ranks.values())
    assert kept <= 2 * len(ranks) < 4 * len(ranks)  # pruned from 4 per layer to 2 on average

    model.eval()
    with torch.no_grad():
        expected = model(**probe_batch).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        # pruned ranks are dropped from the saved tensors, not zeroed: the sums differ in the last bits only
        assert torch.allclose(reloaded(**probe_batch).logits, expected, rtol=0, atol=1e-5)
    kept_after_reload = sum(p.shape[0] for n, p in reloaded.named_parameters() if ".lora_E." in n)
    assert kept_after_reload == kept  # the pruned ranks are gone from the saved adapter, not just zeroed


def test_after_optimizer_step_leaves_other_methods_alone(tiny_llama):
    model = attach_adapter(tiny_llama(), AdapterSpec(rank=4), task="causal_lm")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    after_optimizer_step(model, 1)
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())


def test_modules_to_save_learn_at_their_own_rate(tiny_llama, train_batch):
    spec = AdapterSpec(rank=4, dropout=0.0, modules_to_save=("lm_head",))
    model = attach_adapter(tiny_llama(), spec, task="causal_lm")
    groups = param_groups(model, spec, LR, 0.0, saved_lr=50 * LR)
    saved = {n for n, p in model.named_parameters() if ".modules_to_save." in n}
    assert saved and [g["lr"] for g in groups] == [LR, 50 * LR]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model(**train_batch).loss.backward()
    torch.optim.AdamW(groups, lr=LR, weight_decay=0.0).step()  # Adam's first step moves each entry by ~its lr
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters() if p.requires_grad}
    assert max(moved[n] for n in saved) == pytest.approx(50 * LR, rel=1e-3)
    assert max(v for n, v in moved.items() if ".lora_B." in n) == pytest.approx(LR, rel=1e-3)


def test_a_modules_to_save_lr_without_such_modules_names_the_key(tiny_llama):
    spec = AdapterSpec(rank=4)
    model = attach_adapter(tiny_llama(), spec, task="causal_lm")
    with pytest.raises(RecipeError, match="train.modules_to_save_lr"):
        param_groups(model, spec, LR, 0.0, saved_lr=0.05)
