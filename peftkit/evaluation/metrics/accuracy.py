"""accuracy: share of predicted class labels equal to the reference label."""

from __future__ import annotations

import evaluate

from .confusion import check_labels
from .features import label_pairs


class Accuracy(evaluate.Metric):
    """Mean over examples of `prediction == reference`; in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of predicted labels equal to the reference label.",
            citation="",
            inputs_description="predictions, references: lists of int in 0..num_labels-1; num_labels: int.",
            features=label_pairs(),
        )

    def _compute(self, predictions: list[int], references: list[int], num_labels: int) -> dict[str, float]:
        check_labels(predictions, references, num_labels)
        hits = sum(p == r for p, r in zip(predictions, references, strict=True))
        return {"accuracy": hits / len(predictions) if predictions else 0.0}
