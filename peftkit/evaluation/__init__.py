"""Evaluation: metrics as local `evaluate` modules, and batched greedy generation.

- `metrics/`: one `evaluate.Metric` subclass per metric, and the registry naming them.
- `scoring.py`: score generations or class labels by metric name; perplexity from a mean loss.
- `generate.py`: left-padded, batched greedy completions of tokenized prompts.
"""

from .generate import generate_batched
from .scoring import MetricGroups, group_metrics, perplexity_from_loss, score_generations, score_labels

__all__ = [
    "MetricGroups",
    "generate_batched",
    "group_metrics",
    "perplexity_from_loss",
    "score_generations",
    "score_labels",
]
