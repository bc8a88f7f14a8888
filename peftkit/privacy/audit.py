"""`peftkit eval RUN --privacy-audit`: a loss-threshold membership-inference attack on canaries, to show what the
privacy guarantee buys.

A run with train.canaries = n trains on n canaries mixed into its rows (`canaries(...)[0]`) and never sees n more
drawn the same way (`[1]`): random token strings with a random label (classification) or a random answer after a
random prompt (causal LM), a function of (train.seed, n) so the audit regenerates them. The attacker guesses
"trained on" when a canary's loss is below a threshold; its advantage is the best threshold's true-positive rate
minus false-positive rate (0: no better than a coin; 1: every member told apart). An (epsilon, delta)-DP run bounds
it by (e^epsilon - 1 + 2 delta) / (e^epsilon + 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..adapters.attach import stacked_adapters
from ..data import make_collator
from ..data.prepare import prepare_data
from ..errors import PeftkitError
from ..modeling.load import load_base
from ..modeling.tokens import IGNORE_INDEX
from ..recipe import Recipe
from ..rundir import read_run
from .sgd import example_losses

CANARY_TOKENS = 16  # random tokens per canary (causal LM: half prompt, half answer)


def canaries(tokenizer, recipe: Recipe, *, like: dict) -> tuple[list[dict], list[dict]]:
    """(trained, held out): train.canaries rows each, shaped like the prepared row `like`."""
    n = recipe.train.canaries
    rng = np.random.default_rng(np.random.SeedSequence([recipe.train.seed % 2**63, n, 0xCA9A]))
    special = set(tokenizer.all_special_ids)
    vocab = np.array([i for i in range(len(tokenizer)) if i not in special])
    num_labels = len(recipe.data.label_names or ()) or 2
    rows = []
    for _ in range(2 * n):
        ids = rng.choice(vocab, size=CANARY_TOKENS).tolist()
        if recipe.model.task == "sequence_classification":
            ends = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
            ids = [x for x in ends[0] if x is not None] + ids + [x for x in ends[1] if x is not None]
            row = {"input_ids": ids, "labels": int(rng.integers(num_labels))}
        else:
            half = CANARY_TOKENS // 2
            answer = ids[half:] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
            ids = ids[:half] + answer
            row = {"input_ids": ids, "labels": [IGNORE_INDEX] * half + answer}
        if "token_type_ids" in like:
            row["token_type_ids"] = [0] * len(ids)
        if "attention_mask" in like:
            row["attention_mask"] = [1] * len(ids)
        rows.append(row)
    return rows[:n], rows[n:]


def attack_advantage(member: list[float], held_out: list[float]) -> float:
    """max over thresholds t of P(member loss <= t) - P(held-out loss <= t)."""
    m, h = np.sort(member), np.sort(held_out)
    ts = np.concatenate([m, h])
    return float(max(0.0, np.max(np.searchsorted(m, ts, "right") / len(m) - np.searchsorted(h, ts, "right") / len(h))))


@dataclass(frozen=True)
class AuditRow:
    run: str
    private: bool
    epsilon: float | None
    delta: float | None
    bound: float | None        # the advantage (epsilon, delta)-DP allows
    canaries: int              # trained on; as many held out
    advantage: float
    auc: float                 # P(a trained canary's loss < a held-out canary's)
    member_loss: float         # means
    held_out_loss: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _losses(model, rows, collate, batch_size: int) -> list[float]:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate(rows[i : i + batch_size]).items()}
        out += example_losses(model, batch).tolist()
    return out


def privacy_audit(run_dirs: list[str]) -> list[AuditRow]:
    """The attack on each run's own canaries; the runs share a base (loaded once) and a recipe's data."""
    runs = [read_run(r) for r in run_dirs]
    for run in runs:
        if not run.recipe.train.canaries:
            raise PeftkitError(f"{run.path}: trained without canaries; set train.canaries (e.g. 100) and train again "
                               "to audit it")
    recipe = runs[0].recipe
    tokenizer, data = prepare_data(recipe)
    num_labels = len(data.label_names or ()) or None
    base = load_base(recipe.model, num_labels=num_labels, label_names=data.label_names, tokenizer=tokenizer)
    collate = make_collator(tokenizer, packing=False, task=recipe.model.task, objective="sft")
    rows = []
    for run, model in stacked_adapters(base, runs):
        members, held_out = canaries(tokenizer, run.recipe, like=data.train[0])
        batch = recipe.eval.batch_size or recipe.train.batch_size
        m, h = _losses(model, members, collate, batch), _losses(model, held_out, collate, batch)
        spent = run.metrics.train.privacy if run.metrics else {}
        eps, delta = spent.get("epsilon"), spent.get("delta")
        bound = min(1.0, (math.exp(eps) - 1 + 2 * delta) / (math.exp(eps) + 1)) if eps is not None else None
        auc = float(np.mean([[a < b for b in h] for a in m]))
        rows.append(AuditRow(str(run.path), bool(spent), eps, delta, bound, len(members), attack_advantage(m, h),
                             auc, float(np.mean(m)), float(np.mean(h))))
    return rows
