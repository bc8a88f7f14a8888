"""A preference batch -> its loss and what to log, for every objective; training and evaluation share it.

The reference model is never a second copy of the weights: its log-probs come from the same model with the
adapter switched off (ModelReference with adapter_off), or from a table computed once before training (Precomputed), looked up by
each answer's "answer_index".
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..recipe.schema.train import TrainSpec
from . import preference as formulas
from .logps import sequence_logps

REFERENCE_FILE = "reference_logps.safetensors"  # a run's precomputed reference tables (train.precompute_ref)

# what a reference gives for a batch: log-prob sums of its answers, and of its KTO mismatched answers (or None)
Reference = Callable[[dict], tuple[torch.Tensor, torch.Tensor | None]]
STAT_KEYS = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy", "preference_accuracy",
             "logps_chosen", "logps_rejected")


@dataclass(frozen=True)
class Scored:
    """`loss`: the sum of per-item losses (pairs, or KTO items), divided by the caller's item count. `stats`: sums
    over `pairs` (rewards, margins, wins) to be divided by the pairs counted, and KTO's kl (a batch value)."""

    loss: torch.Tensor
    items: int
    pairs: int
    stats: dict[str, float]


def items_in(batch: dict) -> int:
    """Items a preference batch's loss averages over: pairs, or KTO's answers. Read on the host."""
    return int(batch["desirable"].numel()) if "desirable" in batch else int(batch["input_ids"].shape[0]) // 2


class ModelReference:
    """Reference log-probs scored by `model` as it is (e.g. a bare base in `peftkit eval`), or with its adapter
    disabled (`adapter_off`: PEFT's disable_adapter; the policy's own weights serve as the reference)."""

    def __init__(self, model, *, chunk: int | None = None, selective: bool = True, adapter_off: bool = False):
        self.model, self.chunk, self.selective, self.adapter_off = model, chunk, selective, adapter_off

    @torch.no_grad()
    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.model.disable_adapter() if self.adapter_off else nullcontext():
            ref = sequence_logps(self.model, batch, chunk=self.chunk, selective=self.selective)[0]
            kl = (sequence_logps(self.model, batch, prefix="kl_", chunk=self.chunk, selective=self.selective)[0]
                  if "kl_input_ids" in batch else None)
        return ref, kl


class Precomputed:
    """Reference log-probs looked up per answer in tables computed before training (train.precompute_ref)."""

    def __init__(self, logps: torch.Tensor, kl_logps: torch.Tensor | None = None):
        self.logps, self.kl_logps = logps, kl_logps

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = batch["answer_index"].to(self.logps.device)
        ref = self.logps[index]
        if torch.isnan(ref).any():
            raise RuntimeError("a batch holds answers the precomputed reference never scored")
        kl = self.kl_logps[index] if self.kl_logps is not None and "kl_input_ids" in batch else None
        return ref.to(batch["input_ids"].device), None if kl is None else kl.to(batch["input_ids"].device)


def saved_reference(run_dir: Path, split: str) -> Precomputed | None:
    """The reference a run precomputed for `split` (train or eval), or None when it scored it on the fly."""
    path = Path(run_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    tables = load_file(str(path))
    return Precomputed(tables[f"{split}_logps"], tables.get(f"{split}_kl_logps"))


def score(model, batch: dict, spec: TrainSpec, reference: Reference | None, *, chunk: int | None = None,
          selective: bool = True) -> Scored:
    objective, pref = spec.objective, spec.preference
    beta = pref.beta_for(objective)
    logps, counts = sequence_logps(model, batch, chunk=chunk, selective=selective)
    avg = logps / counts.clamp(min=1)
    ref, ref_kl = reference(batch) if reference is not None else (None, None)
    if objective == "kto":
        with torch.no_grad():
            policy_kl = sequence_logps(model, batch, prefix="kl_", chunk=chunk, selective=selective)[0]
        kl = formulas.kto_kl(policy_kl, ref_kl)
        terms = formulas.kto(logps, ref, batch["desirable"], kl, beta=beta, desirable_weight=pref.desirable_weight,
                             undesirable_weight=pref.undesirable_weight)
        stats = {"kl": float(kl)}
        if "pairs" in batch:  # pairs split into items, chosen first: pair metrics still apply
            half = int(batch["pairs"])
            stats.update(_pair_stats(terms.rewards[:half], terms.rewards[half:], logps[:half], logps[half:]))
        return Scored(terms.losses.sum(), len(logps), int(batch.get("pairs", 0)), stats)
    half = logps.shape[0] // 2
    if objective == "dpo":
        terms = formulas.dpo(logps[:half], logps[half:], ref[:half], ref[half:], beta=beta,
                             label_smoothing=pref.label_smoothing)
    elif objective == "ipo":
        ref_avg = ref / counts.clamp(min=1)
        terms = formulas.ipo(avg[:half], avg[half:], ref_avg[:half], ref_avg[half:], beta=beta)
    elif objective == "simpo":
        terms = formulas.simpo(avg[:half], avg[half:], beta=beta, gamma=pref.gamma,
                               label_smoothing=pref.label_smoothing)
    elif objective == "orpo":
        terms = formulas.orpo(avg[:half], avg[half:], beta=beta)
        terms = formulas.PairTerms(terms.losses - avg[:half], terms.chosen_rewards, terms.rejected_rewards)
    else:
        raise ValueError(f"no preference objective {objective!r}")
    stats = _pair_stats(terms.chosen_rewards, terms.rejected_rewards, logps[:half], logps[half:])
    return Scored(terms.losses.sum(), half, half, stats)


def _pair_stats(chosen_rewards, rejected_rewards, logps_chosen, logps_rejected) -> dict[str, float]:
    """Sums over pairs. reward_accuracy: the implicit reward ranks chosen first (0 at the start, where policy and
    reference agree); preference_accuracy: the policy gives the chosen answer the higher log-probability."""
    margin = (chosen_rewards - rejected_rewards).detach()
    return {
        "rewards_chosen": float(chosen_rewards.sum()),
        "rewards_rejected": float(rejected_rewards.sum()),
        "reward_margin": float(margin.sum()),
        "reward_accuracy": float((margin > 0).sum()),
        "preference_accuracy": float((logps_chosen.detach() > logps_rejected.detach()).sum()),
        "logps_chosen": float(logps_chosen.detach().sum()),
        "logps_rejected": float(logps_rejected.detach().sum()),
    }
