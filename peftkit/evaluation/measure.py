"""Score a model on a run's held-out examples: loss from teacher forcing, task metrics from batched generation
or from the classification head."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate.utils import send_to_device

from ..modeling.loss import causal_lm_loss, head_reads_last_hidden_state, supports_selective_logits
from ..modeling.tokens import trained_tokens
from ..recipe.schema import EvalSpec
from .generate import generate_batched
from .preference import preference_metrics
from .scoring import perplexity_from_loss, score_generations, score_labels

EVAL_LOGITS_CHUNK = 256  # trained positions projected to the vocabulary at a time (~125 MB of logits for 49k)
GENERATION_METRICS = ("exact_match", "rouge_l", "numeric_match")
LABEL_METRICS = ("accuracy", "f1", "precision", "recall")


@dataclass(frozen=True)
class Measurement:
    metrics: dict[str, float]
    seconds: float
    examples: int
    samples: tuple[dict, ...] = ()  # a few (prompt, reference, prediction) triples for the report


@torch.inference_mode()
def eval_loss(model, examples: list[dict], collate: Callable, batch_size: int, device) -> float:
    """Token-weighted mean loss over all examples (not a mean of batch means)."""
    was_training = model.training
    model.eval()
    selective = supports_selective_logits(model)
    chunk = EVAL_LOGITS_CHUNK if selective and head_reads_last_hidden_state(model) else None
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size])
        labels = batch["labels"]
        n = trained_tokens(labels)  # on the host
        if n == 0:
            continue
        batch = send_to_device(batch, device)
        if batch["labels"].dim() == 2:  # summed over trained tokens, projecting only where a token is scored
            total += causal_lm_loss(model, batch, 1, selective=selective, chunk=chunk).float().item()
        else:
            total += model(**batch).loss.float().item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


@torch.inference_mode()
def _classify(model, examples, collate, batch_size, device) -> tuple[list[int], list[int]]:
    was_training = model.training
    model.eval()
    preds, refs = [], []
    for i in range(0, len(examples), batch_size):
        batch = send_to_device(collate(examples[i : i + batch_size]), device)
        labels = batch.pop("labels")
        preds += model(**batch).logits.argmax(-1).tolist()
        refs += labels.tolist()
    model.train(was_training)
    return preds, refs


def measure(
    model, tokenizer, examples: list[dict], spec: EvalSpec, *, collate: Callable, batch_size: int, device,
    stop_token_ids: tuple[int, ...] = (), num_labels: int | None = None, n_samples: int = 3,
    preference: tuple | None = None,
) -> Measurement:
    """`preference`: (train spec, reference) for preference runs: the objective's loss, rewards and accuracies
    replace the token loss (always measured; perplexity does not apply)."""
    t0 = time.perf_counter()
    examples = examples[: spec.max_examples] if spec.max_examples else examples
    metrics: dict[str, float] = {}
    samples: list[dict] = []
    if preference is not None:
        metrics.update(preference_metrics(model, examples, collate, batch_size, device, *preference))
    elif {"loss", "perplexity"} & set(spec.metrics):
        loss = eval_loss(model, examples, collate, batch_size, device)
        metrics["loss"] = loss
        if "perplexity" in spec.metrics:
            metrics["perplexity"] = perplexity_from_loss(loss)
    gen = [m for m in spec.metrics if m in GENERATION_METRICS]
    if gen:
        scored = [e for e in examples if "prompt_ids" in e]
        preds = generate_batched(
            model, tokenizer, [e["prompt_ids"] for e in scored], max_new_tokens=spec.max_new_tokens,
            batch_size=batch_size, stop_token_ids=stop_token_ids, device=device,
        )
        refs = [e["reference"] for e in scored]
        metrics.update(score_generations(gen, preds, refs))
        samples = [
            {"prompt": tokenizer.decode(e["prompt_ids"]), "reference": r, "prediction": p}
            for e, r, p in list(zip(scored, refs, preds))[:n_samples]
        ]
    lab = [m for m in spec.metrics if m in LABEL_METRICS]
    if lab:
        preds, refs = _classify(model, examples, collate, batch_size, device)
        metrics.update(score_labels(lab, preds, refs, num_labels=num_labels or 2))
    return Measurement(metrics=metrics, seconds=time.perf_counter() - t0, examples=len(examples), samples=tuple(samples))
