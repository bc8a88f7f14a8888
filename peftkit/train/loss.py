"""Causal-LM loss that projects to the vocabulary only where a token is trained.

With response-only masks most positions carry no loss, and the vocabulary projection plus its
log-softmax (49k wide for SmolLM2) is the largest single cost of a small model's step. Passing the
trained positions as `logits_to_keep` skips the rest; the loss is the same sum of token
cross-entropies as transformers' own (tests compare them in fp32).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

IGNORE = -100


def supports_selective_logits(model: torch.nn.Module) -> bool:
    config = getattr(model, "active_peft_config", None)
    # Prompt tuning prepends virtual positions to the logits (kept indices would point at the wrong tokens);
    # AdaLoRA adds its orthogonality penalty only to a loss computed by the model from `labels`.
    if config is not None and (config.is_prompt_learning or config.peft_type == "ADALORA"):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def causal_lm_loss(model, batch: dict, num_items: int, *, selective: bool) -> torch.Tensor:
    """Sum of token cross-entropies / num_items (the trained tokens of the whole accumulation window)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if not selective:
        return model(**inputs, labels=labels, use_cache=False, num_items_in_batch=num_items).loss
    targets = labels[:, 1:]  # the logit at position t predicts token t + 1
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)
    # no KV cache: transformers only keeps packed examples apart (by position_ids) without one
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=IGNORE, reduction="sum"
    ) / num_items
