"""Our metrics as local `evaluate` modules, and the registry naming them.

`evaluate.load("accuracy")` fetches a script from the Hugging Face hub, which is unreachable
here and in CI. Each metric is instead an `evaluate.Metric` subclass in this package that we
instantiate directly: no hub, no module cache, no dynamic import. Names match `eval.metrics`
in the recipe schema (`peftkit/recipe/schema/eval.py`).
"""

from __future__ import annotations

import evaluate

from .accuracy import Accuracy
from .exact_match import ExactMatch
from .f1 import F1
from .numeric_match import NumericMatch, extract_final_number
from .precision import Precision
from .recall import Recall
from .rouge_l import RougeL, rouge_l_f1

# Scored on generated text against a reference text.
GENERATION_METRICS: dict[str, type[evaluate.Metric]] = {
    "exact_match": ExactMatch,
    "rouge_l": RougeL,
    "numeric_match": NumericMatch,
}

# Scored on predicted class labels against reference labels.
LABEL_METRICS: dict[str, type[evaluate.Metric]] = {
    "accuracy": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
}

# Computed from the model's mean token loss by the evaluation loop, not by a module here.
LOSS_METRICS: tuple[str, ...] = ("loss", "perplexity")

ALL_METRICS: tuple[str, ...] = (*LOSS_METRICS, *GENERATION_METRICS, *LABEL_METRICS)

__all__ = [
    "ALL_METRICS",
    "GENERATION_METRICS",
    "LABEL_METRICS",
    "LOSS_METRICS",
    "Accuracy",
    "ExactMatch",
    "F1",
    "NumericMatch",
    "Precision",
    "Recall",
    "RougeL",
    "extract_final_number",
    "rouge_l_f1",
]
