"""Preference metrics on held-out pairs: the objective's loss, implicit rewards and their margin, and how often
the model ranks the chosen answer first (by implicit reward, and by its own log-probability)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate.utils import send_to_device

from ..modeling.loss import head_reads_last_hidden_state, supports_selective_logits
from ..modeling.objective import Reference, score
from ..recipe.schema.train import TrainSpec

LOGITS_CHUNK = 256


@torch.no_grad()
def preference_metrics(model, examples: list[dict], collate: Callable, batch_size: int, device, spec: TrainSpec,
                       reference: Reference | None) -> dict[str, float]:
    was_training = model.training
    model.eval()
    selective = supports_selective_logits(model)
    chunk = LOGITS_CHUNK if selective and head_reads_last_hidden_state(model) else None
    loss, items, pairs, batches, sums = 0.0, 0, 0, 0, {}
    try:
        for i in range(0, len(examples), batch_size):
            batch = send_to_device(collate(examples[i : i + batch_size]), device)
            scored = score(model, batch, spec, reference, chunk=chunk, selective=selective)
            loss, items, pairs, batches = loss + float(scored.loss), items + scored.items, pairs + scored.pairs, batches + 1
            sums = {k: sums.get(k, 0.0) + v for k, v in scored.stats.items()}
    finally:
        model.train(was_training)
    out = {"loss": loss / max(items, 1)}
    out.update({k: v / max(pairs, 1) for k, v in sums.items() if k != "kl"})
    if "kl" in sums:
        out["kl"] = sums["kl"] / max(batches, 1)
    return out
