"""exact_match: share of generations equal to their reference, surrounding whitespace ignored."""

from __future__ import annotations

import evaluate

from .features import text_pairs


class ExactMatch(evaluate.Metric):
    """Mean over examples of `prediction.strip() == reference.strip()`; in [0, 1].

    Only surrounding whitespace is normalised: case, punctuation and inner spacing count.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of predictions equal to their reference, surrounding whitespace stripped.",
            citation="",
            inputs_description="predictions: list of str; references: list of str (same length).",
            features=text_pairs(),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
        return {"exact_match": hits / len(predictions) if predictions else 0.0}
