"""Per-sequence log-probabilities of the trained tokens: what every preference objective compares.

Like the SFT loss (loss.py), only trained positions are projected to the vocabulary: `logits_to_keep` picks
those columns, or (chunked) the trained hidden states are gathered and projected `chunk` at a time under
activation checkpointing, so one chunk of fp32 logits is alive at once.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .loss import _project, _unwrapped
from .tokens import IGNORE_INDEX as IGNORE

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = _project(head, hidden).float()
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def sequence_logps(model, batch: dict, *, prefix: str = "", chunk: int | None = None,
                   selective: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over each row's trained tokens, number of those tokens), both shape (rows,), float32.
    `prefix`: read `{prefix}input_ids` / `{prefix}attention_mask` / `{prefix}labels` (e.g. "kl_").
    `chunk` needs a model whose logits are its output embeddings applied to the last hidden state
    (loss.head_reads_last_hidden_state); `selective` False: full logits (models without logits_to_keep)."""
    labels = batch[f"{prefix}labels"]
    inputs = {k: batch[f"{prefix}{k}"] for k in MODEL_INPUTS if f"{prefix}{k}" in batch}
    targets = labels[:, 1:]  # the logit at position t predicts token t + 1
    trained = targets != IGNORE
    counts = trained.sum(1)
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    if not trained.any():
        return sums, counts
    if chunk and selective:
        last = trained.any(dim=0).nonzero()[-1:, 0]
        hidden = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=last).hidden_states[-1]
        hidden, wanted = hidden[:, :-1][trained], targets[trained]
        head = _unwrapped(model).get_output_embeddings()
        pieces = [checkpoint(_token_logps, head, h, t, use_reentrant=False) if torch.is_grad_enabled()
                  else _token_logps(head, h, t) for h, t in zip(hidden.split(chunk), wanted.split(chunk))]
        token_logps, rows = torch.cat(pieces), trained.nonzero()[:, 0]
    else:
        if selective:
            keep = trained.any(dim=0).nonzero().squeeze(1)
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
        else:
            logits = model(**inputs, use_cache=False).logits
            logits = logits[:, -labels.shape[1]:][:, :-1]  # prompt tuning puts its virtual tokens first
            keep = torch.arange(targets.shape[1], device=labels.device)
        kept = trained[:, keep]
        picked = logits.float().log_softmax(-1).gather(-1, targets[:, keep].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        token_logps, rows = picked[kept], kept.nonzero()[:, 0]
    return sums.index_add(0, rows, token_logps), counts
