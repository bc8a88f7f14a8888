"""Causal-LM loss that projects to the vocabulary only where a token is trained.

With response-only masks most positions carry no loss, and the vocabulary projection plus its
log-softmax (49k wide for SmolLM2) is the largest single cost of a small model's step. Passing the
trained positions as `logits_to_keep` skips the rest; the loss is the same sum of token
cross-entropies as transformers' own (tests compare them in fp32).

Chunked: the model returns its final hidden states instead, the trained (row, position) pairs are
gathered from them (exactly those, also in padded batches, where `logits_to_keep` can only pick
whole columns), and the head + cross-entropy run `chunk` positions at a time under activation
checkpointing, so no more than one chunk of fp32 logits is ever alive, in the forward or the backward.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .tokens import IGNORE_INDEX as IGNORE


def supports_selective_logits(model: torch.nn.Module) -> bool:
    config = getattr(model, "active_peft_config", None)
    # Prompt tuning prepends virtual positions to the logits (kept indices would point at the wrong tokens);
    # AdaLoRA adds its orthogonality penalty only to a loss computed by the model from `labels`.
    if config is not None and (config.is_prompt_learning or config.peft_type == "ADALORA"):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DDP / FSDP wrappers keep the model as .module


@torch.no_grad()
def head_reads_last_hidden_state(model: torch.nn.Module) -> bool:
    """Whether logits == output_embeddings(hidden_states[-1]) for this model, checked on a 4-token probe (some
    architectures normalise or soft-cap after the last hidden state; those keep the logits_to_keep path)."""
    if not supports_selective_logits(model):
        return False
    inner = _unwrapped(model)
    head = inner.get_output_embeddings()
    if head is None:
        return False
    device = next(p.device for p in inner.parameters())
    ids = torch.tensor([[1, 2, 3, 4]], device=device)
    was_training = inner.training
    inner.eval()
    try:
        out = inner(input_ids=ids, use_cache=False, output_hidden_states=True,
                    logits_to_keep=torch.tensor([3], device=device))
        hidden = out.hidden_states[-1] if out.hidden_states else None
        if hidden is None or hidden.shape[1] != 4:
            return False
        # loose enough for a 16-bit head run outside the model's autocast, far below a missing norm or soft-cap
        return torch.allclose(_project(head, hidden[:, 3:]).float(), out.logits.float(), rtol=2e-2, atol=2e-2)
    finally:
        inner.train(was_training)


def _project(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    # inside model.forward an autocast wrapper (Accelerate's, Trainer's) may have matched the dtypes; here we do
    dtype = next(head.parameters()).dtype
    return head(hidden if torch.is_autocast_enabled(hidden.device.type) else hidden.to(dtype))


def _ce_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_project(head, hidden).float(), targets, reduction="sum")


def causal_lm_loss(model, batch: dict, num_items: int, *, selective: bool, chunk: int | None = None) -> torch.Tensor:
    """Sum of token cross-entropies / num_items (the trained tokens of the whole accumulation window).
    `chunk`: project and score this many trained positions at a time (only for models where
    head_reads_last_hidden_state holds); None: all kept positions at once."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if not selective:
        return model(**inputs, labels=labels, use_cache=False, num_items_in_batch=num_items).loss
    targets = labels[:, 1:]  # the logit at position t predicts token t + 1
    trained = targets != IGNORE
    if chunk and trained.any():
        # the model's own head runs at one position only; the hidden states feed the chunked head below
        last = trained.any(dim=0).nonzero()[-1:, 0]
        hidden = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=last).hidden_states[-1]
        hidden, wanted = hidden[:, :-1][trained], targets[trained]
        head = _unwrapped(model).get_output_embeddings()
        total = hidden.new_zeros((), dtype=torch.float32)
        for h, t in zip(hidden.split(chunk), wanted.split(chunk)):
            total = total + (checkpoint(_ce_sum, head, h, t, use_reentrant=False) if torch.is_grad_enabled()
                             else _ce_sum(head, h, t))
        return total / num_items
    keep = trained.any(dim=0).nonzero().squeeze(1)
    # no KV cache: transformers only keeps packed examples apart (by position_ids) without one
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=IGNORE, reduction="sum"
    ) / num_items
