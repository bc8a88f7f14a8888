"""numeric_match: GSM8K-style accuracy on the final number of a worked answer (`... #### 42`)."""

from __future__ import annotations

import re
from decimal import Decimal

import evaluate

from .features import text_pairs

ANSWER_MARKER = "####"
# A minus sign only counts when it does not follow a word character, so "2023-05" reads as
# 2023 and 05, not 2023 and -5. Commas are thousands separators and are dropped afterwards.
_NUMBER = re.compile(r"(?:(?<!\w)-)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def extract_final_number(text: str) -> Decimal | None:
    """The answer number of a text, or None when it has none.

    With a `####` marker: the first number after the first marker (what follows the marker is
    the answer; a model that rambles on into a made-up next question would add later markers).
    Without one: the last number in the text. "1,234", "1234" and "1234.0" are all 1234.
    """
    marker = text.find(ANSWER_MARKER)
    if marker >= 0:
        found = _NUMBER.search(text, marker + len(ANSWER_MARKER))
        number = found.group() if found else None
    else:
        numbers = _NUMBER.findall(text)
        number = numbers[-1] if numbers else None
    # The pattern always holds a digit, so what is left after dropping commas parses.
    return Decimal(number.replace(",", "")) if number is not None else None


class NumericMatch(evaluate.Metric):
    """Share of predictions whose final number equals the reference's; in [0, 1].

    A prediction (or reference) without a number counts as a miss.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of predictions whose final number equals the reference's (GSM8K style).",
            citation="Cobbe et al. (2021). Training Verifiers to Solve Math Word Problems (GSM8K).",
            inputs_description="predictions: list of str; references: list of str (same length).",
            features=text_pairs(),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        hits = 0
        for prediction, reference in zip(predictions, references, strict=True):
            got, want = extract_final_number(prediction), extract_final_number(reference)
            hits += got is not None and want is not None and got == want
        return {"numeric_match": hits / len(predictions) if predictions else 0.0}
