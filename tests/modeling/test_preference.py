"""Preference losses: hand-computed values (signs, beta, argument order), TRL 1.16's own implementations on
random log-probs, and gradients / detached rewards."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from peftkit.modeling.preference import dpo, ipo, kto, kto_kl, margin_accuracy, orpo, simpo

pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

with warnings.catch_warnings():  # TRLExperimentalWarning: CPO and ORPO live under trl.experimental in 1.16
    warnings.simplefilter("ignore")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs)


def close(actual: torch.Tensor, expected: list[float] | torch.Tensor) -> bool:
    return torch.allclose(actual, torch.as_tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---- 1. hand-computed values -------------------------------------------------------------------------------

# policy chosen, policy rejected, ref chosen, ref rejected: log-ratios chosen [0.5, -1], rejected [-1, 2], so the
# margins h are [1.5, -3]; every argument differs, so a swap changes the numbers.
PC, PR, RC, RR = t(-1.0, -2.0), t(-2.0, -1.0), t(-1.5, -1.0), t(-1.0, -3.0)


def test_dpo_by_hand():
    out = dpo(PC, PR, RC, RR, beta=0.5)  # beta * h = [0.75, -1.5]
    assert close(out.losses, [softplus(-0.75), softplus(1.5)])
    assert close(out.chosen_rewards, [0.25, -0.5]) and close(out.rejected_rewards, [-0.5, 1.0])
    smooth = dpo(PC, PR, RC, RR, beta=0.5, label_smoothing=0.2)
    assert close(smooth.losses, [0.8 * softplus(-0.75) + 0.2 * softplus(0.75),
                                 0.8 * softplus(1.5) + 0.2 * softplus(-1.5)])


def test_ipo_by_hand():
    out = ipo(PC, PR, RC, RR, beta=0.25)  # target margin 1 / (2 * 0.25) = 2
    assert close(out.losses, [(1.5 - 2) ** 2, (-3 - 2) ** 2])
    assert close(out.chosen_rewards, [0.125, -0.25]) and close(out.rejected_rewards, [-0.25, 0.5])


def test_simpo_by_hand():
    pc, pr = t(-1.0, -2.0), t(-2.0, -1.5)
    out = simpo(pc, pr, beta=2.0, gamma=0.5)  # z = 2 * [1, -0.5] - 0.5 = [1.5, -1.5]
    assert close(out.losses, [softplus(-1.5), softplus(1.5)])
    assert close(out.chosen_rewards, [-2.0, -4.0]) and close(out.rejected_rewards, [-4.0, -3.0])
    smooth = simpo(pc, pr, beta=2.0, gamma=0.5, label_smoothing=0.1)
    assert close(smooth.losses, [0.9 * softplus(-1.5) + 0.1 * softplus(1.5),
                                 0.9 * softplus(1.5) + 0.1 * softplus(-1.5)])


def log_odds(logp: float) -> float:
    p = math.exp(logp)
    return math.log(p / (1 - p))


def test_orpo_by_hand():
    pc, pr = t(-0.5, -2.0), t(-1.0, -0.1)
    out = orpo(pc, pr, beta=0.1)
    z = [log_odds(-0.5) - log_odds(-1.0), log_odds(-2.0) - log_odds(-0.1)]
    assert close(out.losses, [0.1 * softplus(-z[0]), 0.1 * softplus(-z[1])])
    assert close(out.chosen_rewards, [-0.05, -0.2]) and close(out.rejected_rewards, [-0.1, -0.01])


def test_orpo_stable_near_zero():
    # log(1 - exp(x)) computed naively in float32 is ~1% off at x = -1e-6; expm1 keeps it exact.
    pc, pr = t(-1e-6), t(-1e-3)
    x, y = pc.double().item(), pr.double().item()  # the float32 inputs, exactly
    expected = softplus(-(log_odds(x) - log_odds(y)))
    got = orpo(pc, pr, beta=1.0).losses
    assert torch.isfinite(got).all() and math.isclose(got.item(), expected, rel_tol=1e-4)


def test_kto_by_hand():
    policy, ref = t(-1.0, -2.0, -3.0), t(-2.0, -1.0, -3.0)  # r = [1, -1, 0]
    desirable = torch.tensor([True, False, True])
    out = kto(policy, ref, desirable, t(0.5)[0], beta=0.5, desirable_weight=1.5, undesirable_weight=0.75)
    assert close(out.losses, [1.5 * (1 - sigmoid(0.5 * (1 - 0.5))),     # desirable: gain above z0
                              0.75 * (1 - sigmoid(0.5 * (0.5 + 1))),    # undesirable: loss below z0
                              1.5 * (1 - sigmoid(0.5 * (0 - 0.5)))])
    assert close(out.rewards, [0.5, -0.5, 0.0])


def test_kto_kl_by_hand():
    assert close(kto_kl(t(-1.0, -2.0), t(-1.5, -3.0)), 0.75)       # mean of [0.5, 1]
    assert close(kto_kl(t(-2.0, -2.0), t(-1.0, -1.5)), 0.0)        # mean -0.75 clamps at 0
    empty = kto_kl(torch.empty(0), torch.empty(0))
    assert empty.shape == () and empty.item() == 0.0
    policy = t(-1.0, -2.0).requires_grad_()
    assert not kto_kl(policy, t(-1.5, -3.0)).requires_grad


def test_margin_accuracy_by_hand():
    margin, accuracy = margin_accuracy(t(1.0, 0.5, 2.0), t(0.0, 0.5, 3.0))  # margins [1, 0, -1]; a tie is no win
    assert isinstance(margin, float) and isinstance(accuracy, float)
    assert margin == pytest.approx(0.0) and accuracy == pytest.approx(1 / 3)


def test_computes_in_float32():
    out = dpo(PC.bfloat16(), PR.bfloat16(), RC.bfloat16(), RR.bfloat16(), beta=0.5)
    assert out.losses.dtype == out.chosen_rewards.dtype == torch.float32


# ---- 2. against TRL 1.16 -----------------------------------------------------------------------------------
# TRL 1.16 has no standalone dpo_loss / kto_loss: their formulas sit inline in DPOTrainer._compute_loss and
# KTOTrainer._compute_loss, so those are driven with a stand-in `self` and a stand-in model returning fixed per-token
# log-probs; they return the batch-mean loss, so per-pair values come from one call per pair, rewards from _metrics.
# DPOTrainer's "sigmoid" branch has no label smoothing in 1.16, so conservative DPO is compared against
# CPOTrainer.cpo_loss's "sigmoid" branch (same formula) fed the log-ratios policy - ref.

B, BETA = 8, 0.1
CPU = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)


class FakeLM:
    """Stands in for TRL's fused-LM-head model: fixed per-token log-probs for each input_ids tensor."""

    training = True

    def __init__(self, table: list[tuple[torch.Tensor, torch.Tensor]]):
        self.table = table

    def __call__(self, *, input_ids: torch.Tensor, **_: object) -> SimpleNamespace:
        logps = next(lp for ids, lp in self.table if ids is input_ids)
        zeros = torch.zeros_like(logps)
        return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def trainer_self(model: FakeLM, **attrs: object) -> SimpleNamespace:
    return SimpleNamespace(model=model, accelerator=CPU, aux_loss_enabled=False, precompute_ref_logps=True,
                           _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1, **attrs)


def padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, completion_mask, per-token log-probs) for completions after a one-token prompt."""
    width = max(len(r) for r in rows)
    mask = torch.zeros(len(rows), width + 1, dtype=torch.long)
    logps = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        mask[i, 1:1 + len(r)] = 1
        logps[i, :len(r)] = r
    return torch.zeros_like(mask), mask, logps


def tokens(n: int) -> list[torch.Tensor]:
    return [-2 * torch.rand(int(length)) for length in torch.randint(1, 6, (n,))]


@pytest.fixture
def pairs() -> dict:
    torch.manual_seed(0)
    chosen, rejected = tokens(B), tokens(B)
    pc, pr = torch.stack([c.sum() for c in chosen]), torch.stack([r.sum() for r in rejected])
    lc, lr = torch.tensor([len(c) for c in chosen]), torch.tensor([len(r) for r in rejected])
    return dict(chosen=chosen, rejected=rejected, pc=pc, pr=pr, lc=lc, lr=lr,
                rc=pc + 0.5 * torch.randn(B), rr=pr + 0.5 * torch.randn(B))


def trl_dpo(loss_type: str, chosen: list[torch.Tensor], rejected: list[torch.Tensor], rc: torch.Tensor,
            rr: torch.Tensor) -> tuple[float, dict[str, float]]:
    ids, mask, logps = padded(chosen + rejected)  # TRL's batch is [chosen..., rejected...]
    model = FakeLM([(ids, logps)])
    me = trainer_self(model, beta=BETA, label_smoothing=0.0, loss_types=[loss_type], loss_weights=[1.0],
                      ld_alpha=None, f_divergence_type="reverse_kl", use_weighting=False)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), completion_mask=mask,
                  ref_chosen_logps=rc, ref_rejected_logps=rr)
    loss = DPOTrainer._compute_loss(me, model, inputs, return_outputs=False)
    return loss.item(), {k: v[-1] for k, v in me._metrics["train"].items()}


def per_pair(loss_type: str, p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    results = [trl_dpo(loss_type, [p["chosen"][i]], [p["rejected"][i]], p["rc"][i:i + 1], p["rr"][i:i + 1])
               for i in range(B)]
    return (torch.tensor([loss for loss, _ in results]), torch.tensor([m["rewards/chosen"] for _, m in results]),
            torch.tensor([m["rewards/rejected"] for _, m in results]))


def test_dpo_matches_trl_dpo_trainer_sigmoid(pairs):
    ours = dpo(pairs["pc"], pairs["pr"], pairs["rc"], pairs["rr"], beta=BETA)
    losses, chosen, rejected = per_pair("sigmoid", pairs)
    assert close(ours.losses, losses) and close(ours.chosen_rewards, chosen) and close(ours.rejected_rewards, rejected)
    loss, metrics = trl_dpo("sigmoid", pairs["chosen"], pairs["rejected"], pairs["rc"], pairs["rr"])  # whole batch
    assert ours.losses.mean().item() == pytest.approx(loss, rel=1e-5)
    margin, accuracy = margin_accuracy(ours.chosen_rewards, ours.rejected_rewards)
    assert 0 < accuracy < 1  # the random data has both outcomes
    assert margin == pytest.approx(metrics["rewards/margins"], abs=1e-6)
    assert accuracy == pytest.approx(metrics["rewards/accuracies"])


def test_ipo_matches_trl_dpo_trainer_ipo(pairs):
    # TRL divides the summed log-ratios by the completion length; here the caller passes averages instead.
    lc, lr = pairs["lc"], pairs["lr"]
    ours = ipo(pairs["pc"] / lc, pairs["pr"] / lr, pairs["rc"] / lc, pairs["rr"] / lr, beta=BETA)
    losses, chosen, rejected = per_pair("ipo", pairs)
    assert close(ours.losses, losses)
    # TRL logs rewards from the summed log-ratios even for IPO; ours come from the averages it was given.
    assert close(ours.chosen_rewards * lc, chosen) and close(ours.rejected_rewards * lr, rejected)


def cpo_self(loss_type: str, label_smoothing: float, simpo_gamma: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=BETA, label_smoothing=label_smoothing,
                           simpo_gamma=simpo_gamma, accelerator=CPU)


def test_dpo_label_smoothing_matches_trl_cpo_sigmoid(pairs):
    chosen, rejected = pairs["pc"] - pairs["rc"], pairs["pr"] - pairs["rr"]
    losses, c_rew, r_rew = CPOTrainer.cpo_loss(cpo_self("sigmoid", 0.2), chosen, rejected)
    ours = dpo(pairs["pc"], pairs["pr"], pairs["rc"], pairs["rr"], beta=BETA, label_smoothing=0.2)
    assert close(ours.losses, losses) and close(ours.chosen_rewards, c_rew) and close(ours.rejected_rewards, r_rew)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl_cpo_simpo(pairs, label_smoothing):
    # TRL 1.16's CPOTrainer takes SimPO's target margin itself (simpo_gamma), not a gamma/beta ratio.
    pc, pr = pairs["pc"] / pairs["lc"], pairs["pr"] / pairs["lr"]
    losses, c_rew, r_rew = CPOTrainer.cpo_loss(cpo_self("simpo", label_smoothing, simpo_gamma=0.5), pc, pr)
    ours = simpo(pc, pr, beta=BETA, gamma=0.5, label_smoothing=label_smoothing)
    assert close(ours.losses, losses) and close(ours.chosen_rewards, c_rew) and close(ours.rejected_rewards, r_rew)


def test_orpo_matches_trl_odds_ratio_loss(pairs):
    pc, pr = pairs["pc"] / pairs["lc"], pairs["pr"] / pairs["lr"]
    pc[0] = -1e-4  # near-certain answer: TRL's other log1mexp branch
    losses, c_rew, r_rew, _, _ = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=BETA, accelerator=CPU), pc, pr)
    ours = orpo(pc, pr, beta=BETA)
    # TRL returns beta * logsigmoid(log_odds) and subtracts its mean from the NLL; ours is the loss term itself.
    assert close(ours.losses, -losses) and close(ours.chosen_rewards, c_rew) and close(ours.rejected_rewards, r_rew)


def trl_kto(items: list[torch.Tensor], ref: torch.Tensor, labels: torch.Tensor, kl_items: list[torch.Tensor],
            ref_kl: torch.Tensor) -> tuple[float, dict[str, float]]:
    ids, mask, logps = padded(items)
    kl_ids, kl_mask, kl_logps = padded(kl_items)
    model = FakeLM([(ids, logps), (kl_ids, kl_logps)])
    me = trainer_self(model, calculate_KL=True, loss_type="kto", beta=BETA, desirable_weight=1.3,
                      undesirable_weight=0.7)
    me._compute_kl_logps = lambda m, batch: KTOTrainer._compute_kl_logps(me, m, batch)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), completion_mask=mask, label=labels,
                  KL_input_ids=kl_ids, KL_attention_mask=torch.ones_like(kl_ids), KL_completion_mask=kl_mask,
                  ref_logps=ref, ref_KL_logps=ref_kl)
    loss = KTOTrainer._compute_loss(me, model, inputs, return_outputs=False)
    return loss.item(), {k: v[-1] for k, v in me._metrics["train"].items()}


@pytest.mark.parametrize("kl_shift", [-0.3, 0.3])  # ref below the policy on mismatched pairs: KL > 0; above: clamped
def test_kto_matches_trl_kto_trainer(kl_shift):
    torch.manual_seed(0)
    items, kl_items = tokens(B), tokens(B)
    policy, policy_kl = torch.stack([x.sum() for x in items]), torch.stack([x.sum() for x in kl_items])
    ref, ref_kl = policy + 0.5 * torch.randn(B), policy_kl + kl_shift + 0.1 * torch.randn(B)
    labels = torch.tensor([True, False, True, True, False, True, False, True])

    kl = kto_kl(policy_kl, ref_kl)
    assert bool(kl > 0) is (kl_shift < 0)
    ours = kto(policy, ref, labels, kl, beta=BETA, desirable_weight=1.3, undesirable_weight=0.7)
    losses, rewards = [], []
    for i in range(B):
        loss, metrics = trl_kto([items[i]], ref[i:i + 1], labels[i:i + 1], kl_items, ref_kl)
        assert metrics["kl"] == pytest.approx(kl.item(), abs=1e-6)
        losses.append(loss)
        rewards.append(metrics["rewards/chosen" if labels[i] else "rewards/rejected"])
    assert close(ours.losses, losses) and close(ours.rewards, rewards)
    loss, _ = trl_kto(items, ref, labels, kl_items, ref_kl)  # whole batch
    assert ours.losses.mean().item() == pytest.approx(loss, rel=1e-5)


# ---- 3. gradients ------------------------------------------------------------------------------------------

def test_dpo_gradient_raises_chosen_and_rewards_are_detached():
    pc = PC.clone().requires_grad_()
    out = dpo(pc, PR, RC, RR, beta=0.5)
    out.losses.sum().backward()
    assert (pc.grad < 0).all()  # raising the chosen log-prob lowers the loss
    assert out.losses.requires_grad and not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_rewards_detached_everywhere():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    for out in (ipo(pc, pr, RC, RR, beta=0.5), simpo(pc, pr, beta=1.0, gamma=0.5), orpo(pc, pr, beta=0.1)):
        assert out.losses.requires_grad
        assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    item = kto(pc, RC, torch.tensor([True, False]), torch.tensor(0.1), beta=0.5)
    assert item.losses.requires_grad and not item.rewards.requires_grad
