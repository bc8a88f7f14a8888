"""Preference-optimisation losses as pure tensor functions: log-probs in, per-example losses out.

Kept free of models and trainers so each formula can be checked against the paper by hand, and
compared against TRL, on a handful of numbers.

- DPO: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
  Reward Model" (with the conservative / label-smoothed variant).
- IPO: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences" (Eq. 17).
- ORPO: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model".
- SimPO: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward".
- KTO: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization".

Every function computes in float32 whatever the input dtype: the differences of summed log-probs
that these losses take are where half precision loses the most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairTerms:
    """Per-pair losses (differentiable) and the implicit rewards logged with them (detached)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


@dataclass(frozen=True)
class ItemTerms:
    """KTO's per-item weighted losses (differentiable) and implicit rewards (detached)."""

    losses: torch.Tensor
    rewards: torch.Tensor


def _pair(losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> PairTerms:
    return PairTerms(losses, chosen_rewards.detach(), rejected_rewards.detach())


def _smoothed_logistic(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-log sigmoid(z), with `label_smoothing` of the pairs assumed flipped (conservative DPO)."""
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def dpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor, *, beta: float, label_smoothing: float = 0.0) -> PairTerms:
    """DPO on summed answer log-probs: a logistic loss on the margin between the two answers' implicit
    rewards beta * log(pi / pi_ref), which is what the Bradley-Terry model under a KL-constrained policy reduces to."""
    chosen = policy_chosen.float() - ref_chosen.float()
    rejected = policy_rejected.float() - ref_rejected.float()
    losses = _smoothed_logistic(beta * (chosen - rejected), label_smoothing)
    return _pair(losses, beta * chosen, beta * rejected)


def ipo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor, *, beta: float) -> PairTerms:
    """IPO on per-token average log-probs: regresses the log-ratio margin onto 1/(2 beta) instead of pushing it
    to infinity, so deterministic preferences do not drive the policy away from the reference."""
    chosen = policy_chosen.float() - ref_chosen.float()
    rejected = policy_rejected.float() - ref_rejected.float()
    losses = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return _pair(losses, beta * chosen, beta * rejected)


def simpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, *, beta: float, gamma: float,
          label_smoothing: float = 0.0) -> PairTerms:
    """SimPO on per-token average log-probs: the length-normalised log-likelihood is the reward itself (no
    reference model), and the chosen answer must beat the rejected one by the target margin `gamma`."""
    chosen, rejected = policy_chosen.float(), policy_rejected.float()
    losses = _smoothed_logistic(beta * (chosen - rejected) - gamma, label_smoothing)
    return _pair(losses, beta * chosen, beta * rejected)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0; expm1 keeps it accurate as x -> 0, where 1 - exp(x) cancels."""
    return torch.log(-torch.expm1(x))


def orpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, *, beta: float) -> PairTerms:
    """ORPO's odds-ratio term on per-token average log-probs: -beta log sigmoid(log odds(chosen) - log odds(rejected)).
    The caller adds the chosen answer's NLL (-policy_chosen), which ORPO trains jointly in place of an SFT stage."""
    chosen, rejected = policy_chosen.float(), policy_rejected.float()
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    return _pair(-beta * F.logsigmoid(log_odds), beta * chosen, beta * rejected)


def kto(policy: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, *, beta: float,
        desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> ItemTerms:
    """KTO on unpaired, labelled answers: a sigmoid value function of each answer's implicit reward relative to the
    reference point `kl` (z0), gains for desirable answers and losses for undesirable ones, weighted separately
    so unbalanced data can be rebalanced."""
    r = policy.float() - ref.float()
    kl = kl.float().detach()
    gain = 1.0 - torch.sigmoid(beta * (r - kl))
    loss = 1.0 - torch.sigmoid(beta * (kl - r))
    losses = torch.where(desirable.bool(), desirable_weight * gain, undesirable_weight * loss)
    return ItemTerms(losses, (beta * r).detach())


def kto_kl(policy_kl: torch.Tensor, ref_kl: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0: the batch estimate of KL(pi || pi_ref) from mismatched (prompt, answer) pairs,
    clamped at 0 (a KL cannot be negative) and detached (the paper does not backpropagate through it)."""
    if policy_kl.numel() == 0:
        return torch.tensor(0.0)
    return (policy_kl.float() - ref_kl.float()).mean().clamp(min=0.0).detach()


def margin_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[float, float]:
    """(mean reward margin, share of pairs where the chosen reward is strictly higher): the usual progress metrics."""
    chosen, rejected = chosen_rewards.float(), rejected_rewards.float()
    return (chosen - rejected).mean().item(), (chosen > rejected).float().mean().item()
