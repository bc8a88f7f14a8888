"""What the data layer hands to training and evaluation: tokenized examples plus an honest report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..modeling.tokens import IGNORE_INDEX as IGNORE  # noqa: F401  (the data layer's short name for it)


@dataclass(frozen=True)
class Segment:
    """A run of rendered text that is either trained (carries loss) or not."""

    text: str
    trained: bool


@dataclass(frozen=True)
class Rendered:
    """One example as text segments. `prompt_end` = number of segments before the final response (generation
    prompt boundary); `reference` = the final response text, both None for formats that do not generate."""

    segments: tuple[Segment, ...]
    prompt_end: int | None = None
    reference: str | None = None


@dataclass(frozen=True)
class SplitReport:
    """Counts for one split. `truncated`: kept but cut to max_length; `dropped`: nothing trained was left after
    truncation; `skipped`: bad rows dropped because data.on_bad_row is skip."""

    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class DataReport:
    train: SplitReport
    eval: SplitReport
    format: str
    template: str | None = None  # how prompts were rendered (e.g. "tokenizer", "chatml", "alpaca")
    label_counts: tuple[tuple[str, int], ...] | None = None  # classification, train split
    skip_reasons: tuple[str, ...] = ()  # the first few skipped rows, "file, row N: why"
    sources: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.label_counts is not None:
            d["label_counts"] = dict(self.label_counts)
        d["skip_reasons"] = list(self.skip_reasons)
        d["sources"] = list(self.sources)
        return d


@dataclass(frozen=True)
class DataBundle:
    """causal_lm rows: {"input_ids", "labels"} (labels IGNORE where untrained); generative eval rows also carry
    "prompt_ids" and "reference". classification rows: {"input_ids", "labels": int} (+ "token_type_ids").
    preference pairs: {"chosen": {"input_ids", "labels"}, "rejected": {...}, "prompt_len"}; unpaired preference
    rows: {"input_ids", "labels", "desirable": bool, "prompt_len"}; both with "prompt_ids"/"reference" in eval."""

    train: list[dict]
    eval: list[dict]
    report: DataReport
    label_names: tuple[str, ...] | None
    stop_token_ids: tuple[int, ...]


def sequences(row: dict) -> list[dict]:
    """The token sequences of one example: a preference pair holds two (chosen, rejected), other rows are one."""
    return [row["chosen"], row["rejected"]] if "chosen" in row else [row]


class RowProblem(Exception):
    """Why one input row cannot be used; the builder adds the file and row, or counts a skip."""
