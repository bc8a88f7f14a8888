"""What counts as a trained token, defined once for the data report, training, evaluation and the bench.

A label of IGNORE_INDEX carries no loss. In a causal LM the logit at position t predicts token t + 1, so the label
at position 0 is never scored (the data layer sets it to IGNORE_INDEX, and the packing collator does the same at
every example's start); a trained token is a label at position >= 1 that is not IGNORE_INDEX. A classification row
has one label, which is one trained item.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100  # torch cross_entropy's default ignore_index


def trained_tokens(labels) -> int:
    """Trained tokens of one row (a list of ints, or an int for classification) or one batch (a tensor: rows x
    positions for causal LM, one label per row for classification)."""
    if isinstance(labels, int):
        return 1
    if isinstance(labels, Sequence):
        return sum(1 for x in labels[1:] if x != IGNORE_INDEX)
    if labels.dim() == 1:
        return int(labels.numel())
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
