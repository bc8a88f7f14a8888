"""The two input schemas our `evaluate` modules declare: generated text, or class labels."""

from __future__ import annotations

import datasets


# Functions, not module constants: `Features` is a mutable dict and each module gets its own.
def text_pairs() -> datasets.Features:
    text = datasets.Value("string")
    return datasets.Features({"predictions": text, "references": text})


def label_pairs() -> datasets.Features:
    label = datasets.Value("int64")
    return datasets.Features({"predictions": label, "references": label})
