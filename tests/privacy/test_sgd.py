"""DP-SGD's step on a tiny Llama with LoRA: Opacus's per-example gradients equal autograd's one row at a time,
each example's clipped gradient is bounded by max_grad_norm, the batch's is their sum (per-example, not per-batch,
clipping), the frozen base gets no gradient, and Poisson draws are a pure function of (secret, step)."""

import pytest
import torch

from peftkit.adapters import attach_adapter
from peftkit.privacy import PoissonBatches, PrivacyPlan, PrivateSGD, example_losses
from peftkit.recipe.schema import AdapterSpec, TrainSpec
from peftkit.training.optim import build_optimizer

from training.test_loop import collate, examples, tiny_llama


def private(max_grad_norm: float, noise: float = 0.0):
    model = attach_adapter(tiny_llama(), AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, TrainSpec(optimizer="sgd", lr=0.1))
    rows = examples()
    plan = PrivacyPlan(rows=len(rows), expected_batch=1, sample_rate=1 / len(rows), noise_multiplier=noise,
                       delta=1e-5, max_grad_norm=max_grad_norm, steps=10, accountant="rdp", target_epsilon=None,
                       epsilon_at_end=0.0)
    sgd = PrivateSGD(model, optimizer, plan, rows=rows, collate=collate, batch_size=2, device="cpu")
    return model, params, sgd, rows


def grads_for(model, params, sgd, draw: list[int]) -> torch.Tensor:
    sgd.sampler.micro_batches = lambda step: [draw[i:i + 2] for i in range(0, len(draw), 2)]
    sgd.gradients(model, 0)
    flat = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return flat


def test_per_example_gradients_match_autograd_row_by_row():
    model, params, sgd, rows = private(max_grad_norm=1e9)  # nothing clipped
    batch = grads_for(model, params, sgd, [0, 1, 2, 3])
    sgd.close()  # plain autograd from here
    by_hand = torch.zeros_like(batch)
    for i in range(4):
        example_losses(model, collate([rows[i]])).sum().backward()
        by_hand += torch.cat([p.grad.flatten() for p in params])
        for p in params:
            p.grad = None
    assert torch.allclose(batch, by_hand, atol=1e-5, rtol=1e-4)


def test_each_example_is_clipped_to_max_grad_norm_and_the_batch_is_their_sum():
    bound = 0.05
    model, params, sgd, _ = private(max_grad_norm=bound)
    alone = [grads_for(model, params, sgd, [i]) for i in range(6)]
    for g in alone:  # expected batch 1: the step's gradient is the one clipped example
        assert g.norm() <= bound * (1 + 1e-5)
        assert g.norm() == pytest.approx(bound, rel=1e-3)  # these rows' gradients are all longer than the bound
    together = grads_for(model, params, sgd, list(range(6)))
    assert torch.allclose(together, sum(alone), atol=1e-6)
    assert together.norm() > bound * 1.5  # one clip over the batch would have capped it at the bound
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None and getattr(p, "grad_sample", None) is None for p in frozen)


def test_noise_has_the_stated_scale_and_an_empty_draw_is_noise_only():
    torch.manual_seed(0)
    model, params, sgd, _ = private(max_grad_norm=0.5, noise=2.0)
    noise = grads_for(model, params, sgd, [])
    assert noise.std().item() == pytest.approx(2.0 * 0.5, rel=0.1)  # sigma x C, divided by expected batch 1
    assert len(sgd.budget.accountant.history) == 1  # the empty step is accounted too


def test_poisson_draws_are_a_function_of_the_secret_and_step():
    a, b = PoissonBatches(1000, 0.05, secret=7, batch_size=16), PoissonBatches(1000, 0.05, secret=7, batch_size=16)
    assert a.draw(12) == b.draw(12) and a.draw(12) != a.draw(13)
    assert a.draw(3) != PoissonBatches(1000, 0.05, secret=8, batch_size=16).draw(3)
    sizes = [len(a.draw(k)) for k in range(200)]
    assert 45 < sum(sizes) / len(sizes) < 55 and len(set(sizes)) > 5  # mean q x n, varying
    assert all(len(c) <= 16 for c in a.micro_batches(5)) and sum(a.micro_batches(5), []) == a.draw(5)


def test_a_draw_is_split_shortest_rows_first_and_the_gradient_is_the_same():
    lengths = [(7 * i) % 23 + 1 for i in range(1000)]
    a = PoissonBatches(1000, 0.05, secret=7, batch_size=16, lengths=lengths)
    chunks = a.micro_batches(5)
    assert sorted(sum(chunks, [])) == a.draw(5) and all(len(c) <= 16 for c in chunks)  # the same rows, once each
    flat = [lengths[i] for i in sum(chunks, [])]
    assert flat == sorted(flat) and flat != [lengths[i] for i in a.draw(5)]
    # the padding computed falls; the step's gradient (a sum over the draw) does not change with the split
    padded = lambda cs: sum(len(c) * max(lengths[i] for i in c) for c in cs)  # noqa: E731
    unsorted = PoissonBatches(1000, 0.05, secret=7, batch_size=16).micro_batches(5)
    assert padded(chunks) < 0.8 * padded(unsorted)
    model, params, sgd, rows = private(max_grad_norm=0.05)
    by_length = sorted(range(6), key=lambda i: len(rows[i]["input_ids"]))
    assert by_length != list(range(6))
    assert torch.allclose(grads_for(model, params, sgd, by_length), grads_for(model, params, sgd, list(range(6))),
                          atol=1e-6)
    assert sgd.sampler.lengths is not None  # the trainer's PrivateSGD groups by length


def test_fit_stops_before_the_step_that_would_exceed_the_target():
    from accelerate import Accelerator

    from peftkit.privacy import epsilon_of
    from peftkit.training.loop import FitState, fit
    from peftkit.training.optim import build_scheduler

    model, params, sgd, rows = private(max_grad_norm=1.0, noise=1.0)
    q = sgd.plan.sample_rate
    target = epsilon_of("rdp", [(1.0, q, 3)], 1e-5)  # what 3 steps spend
    sgd.plan = sgd.budget.plan = PrivacyPlan(**{**sgd.plan.__dict__, "target_epsilon": target})
    spec = TrainSpec(max_steps=10, batch_size=2, lr=1e-3, optimizer="sgd", log_every=1)
    optimizer = sgd.dp.original_optimizer
    state = fit(model, optimizer, build_scheduler(optimizer, spec), iter(()), Accelerator(cpu=True), spec,
                FitState(), privacy=sgd)
    assert state.step == 3 and sgd.epsilon() == target
    assert [c["epsilon"] for c in state.curve] == pytest.approx([epsilon_of("rdp", [(1.0, q, k)], 1e-5)
                                                                 for k in (1, 2, 3)])
