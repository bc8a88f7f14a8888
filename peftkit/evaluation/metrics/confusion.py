"""Per-class counts behind precision, recall and F1, and the averaging rule they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peftkit.errors import PeftkitError


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of a label set, already averaged (binary: class 1; else macro)."""

    precision: float
    recall: float
    f1: float


def check_labels(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> None:
    """Refuse labels outside 0..num_labels-1: a silent miscount would look like a real score."""
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    for side, labels in (("prediction", predictions), ("reference", references)):
        for row, label in enumerate(labels):
            if not 0 <= label < num_labels:
                raise PeftkitError(f"{side} label {label!r} at example {row} is outside 0..{num_labels - 1}")


def _ratio(numerator: int, denominator: int) -> float:
    # Zero division (a class never predicted, or never present) scores 0.0, as sklearn's zero_division=0.
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def class_scores(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> ClassScores:
    """Binary (num_labels == 2): scores of the positive class 1.

    Multi-class: macro average over the classes that occur in the references or the predictions
    (a class absent from both says nothing about the model, so it is not averaged in as a zero).
    Macro F1 is the mean of the per-class F1 values, not the F1 of the macro precision and recall.
    """
    check_labels(predictions, references, num_labels)
    classes = [1] if num_labels == 2 else sorted(set(predictions) | set(references))
    per_class: list[tuple[float, float, float]] = []
    for label in classes:
        true_pos = sum(p == label and r == label for p, r in zip(predictions, references))
        predicted = sum(p == label for p in predictions)
        actual = sum(r == label for r in references)
        precision, recall = _ratio(true_pos, predicted), _ratio(true_pos, actual)
        per_class.append((precision, recall, _f1(precision, recall)))
    if not per_class:
        return ClassScores(0.0, 0.0, 0.0)
    n = len(per_class)
    return ClassScores(
        precision=sum(s[0] for s in per_class) / n,
        recall=sum(s[1] for s in per_class) / n,
        f1=sum(s[2] for s in per_class) / n,
    )
