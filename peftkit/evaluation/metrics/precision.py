"""precision: of the labels predicted as a class, the share that are right."""

from __future__ import annotations

import evaluate

from .confusion import class_scores
from .features import label_pairs


class Precision(evaluate.Metric):
    """Of the labels predicted as a class, the share that are right; in [0, 1], zero division scoring 0.0.

    Binary (num_labels == 2): the positive class is 1. Multi-class: macro average over the
    classes present in the references or predictions (see `confusion.class_scores`).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Of the labels predicted as a class, the share that are right"
            " (binary: class 1; multi-class: macro average).",
            citation="",
            inputs_description="predictions, references: lists of int in 0..num_labels-1; num_labels: int.",
            features=label_pairs(),
        )

    def _compute(self, predictions: list[int], references: list[int], num_labels: int) -> dict[str, float]:
        return {"precision": class_scores(predictions, references, num_labels).precision}
