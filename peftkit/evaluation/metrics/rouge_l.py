"""rouge_l: longest-common-subsequence F-measure over whitespace tokens (our own, no rouge_score)."""

from __future__ import annotations

import evaluate

from .features import text_pairs


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)), one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for token in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, other in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if token == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """F1 of LCS precision (over prediction tokens) and recall (over reference tokens).

    Tokens are `str.split()` pieces, compared exactly (case-sensitive). If either side has no
    tokens the score is 0.0, as in the reference `rouge_score` implementation.
    """
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return 0.0
    common = lcs_length(pred, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
    """Mean over examples of the ROUGE-L F-measure (beta = 1) on whitespace tokens; in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="ROUGE-L: F-measure of the longest common whitespace-token subsequence, averaged.",
            citation="Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str (same length).",
            features=text_pairs(),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        scores = [rouge_l_f1(p, r) for p, r in zip(predictions, references, strict=True)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0}
