"""Score generations or class labels with the named metrics; perplexity from a mean loss."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import evaluate

from peftkit.errors import PeftkitError

from .metrics import ALL_METRICS, GENERATION_METRICS, LABEL_METRICS, LOSS_METRICS


@dataclass(frozen=True)
class MetricGroups:
    """Recipe metric names sorted by what they need: the mean loss, generations, or class labels."""

    loss: tuple[str, ...]
    generation: tuple[str, ...]
    labels: tuple[str, ...]


def group_metrics(metric_names: Sequence[str]) -> MetricGroups:
    """Split `eval.metrics` by kind (order kept, duplicates dropped); unknown names raise PeftkitError."""
    names = _known(metric_names)
    return MetricGroups(
        loss=tuple(n for n in names if n in LOSS_METRICS),
        generation=tuple(n for n in names if n in GENERATION_METRICS),
        labels=tuple(n for n in names if n in LABEL_METRICS),
    )


def perplexity_from_loss(loss: float) -> float:
    """exp(mean token loss); inf where exp overflows (loss above ~709), nan for a nan loss."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def score_generations(
    metric_names: Sequence[str], predictions: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """Mean score per metric over (prediction, reference) text pairs, each in [0, 1].

    exact_match: equal after stripping surrounding whitespace. rouge_l: LCS F-measure over
    whitespace tokens. numeric_match: equal final numbers (after `####` if present, else the
    last number; commas dropped; compared as numbers).
    """
    return _score(metric_names, GENERATION_METRICS, "generated text", predictions, references, {})


def score_labels(
    metric_names: Sequence[str], predictions: Sequence[int], references: Sequence[int], *, num_labels: int
) -> dict[str, float]:
    """Score per metric over predicted vs reference class labels (0..num_labels-1), each in [0, 1].

    accuracy: share correct. precision / recall / f1: for two labels, of the positive class 1;
    for more, the macro average (unweighted mean over the classes present in references or
    predictions; macro F1 is the mean of per-class F1). Zero division scores 0.0.
    """
    kwargs = {"num_labels": num_labels}
    return _score(metric_names, LABEL_METRICS, "class labels", predictions, references, kwargs)


def _known(metric_names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in metric_names if n not in ALL_METRICS]
    if unknown:
        raise PeftkitError(f"unknown metric {unknown[0]!r}; valid metrics: {', '.join(ALL_METRICS)}")
    return tuple(dict.fromkeys(metric_names))


def _score(
    metric_names: Sequence[str],
    registry: Mapping[str, type[evaluate.Metric]],
    kind: str,
    predictions: Sequence[object],
    references: Sequence[object],
    compute_kwargs: Mapping[str, object],
) -> dict[str, float]:
    names = _known(metric_names)
    misplaced = [n for n in names if n not in registry]
    if misplaced:
        raise PeftkitError(
            f"metric {misplaced[0]!r} does not score {kind}; for {kind} use: {', '.join(registry)}"
        )
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise PeftkitError(f"no examples to score for {', '.join(names)}")
    scores: dict[str, float] = {}
    # evaluate.Metric makes a folder under its cache_dir even when it keeps data in memory;
    # a throwaway folder keeps it from writing into ~/.cache (which may be read-only).
    with tempfile.TemporaryDirectory(prefix="peftkit-metrics-") as cache_dir:
        for name in names:
            module = registry[name](keep_in_memory=True, cache_dir=cache_dir)
            result = module.compute(predictions=list(predictions), references=list(references), **compute_kwargs)
            scores[name] = float(result[name])
    return scores
