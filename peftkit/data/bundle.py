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
class SourceRead:
    """Where one data source's rows were read from: the local copy the recipe names, the public hub dataset
    behind it (data.hub), or a builtin set. `local` is kept when the hub was read in its place: it was absent."""

    key: str  # data.path, data.eval_path, data.mix.N.path
    read: str  # local | hub | builtin
    local: str | None = None
    hub: str | None = None  # the hub dataset id, and below the load_dataset arguments used (or to be used)
    config: str | None = None
    data_dir: str | None = None
    split: str | None = None
    revision: str | None = None

    def hub_label(self) -> str:
        """e.g. "Anthropic/hh-rlhf (data_dir helpful-base, split test)"."""
        parts = [f"{k} {v}" for k, v in (("config", self.config), ("data_dir", self.data_dir), ("split", self.split),
                                          ("revision", self.revision)) if v]
        return f"{self.hub} ({', '.join(parts)})" if parts else str(self.hub)

    def describe(self) -> str:
        """One line for people: what is read, and for a hub read, the local copy it stands in for."""
        if self.read != "hub":
            return f"{self.key}: {self.local}"
        absent = f" in place of {self.local} (absent here)" if self.local else ""
        return f"{self.key}: hub dataset {self.hub_label()}{absent}"


@dataclass(frozen=True)
class DataReport:
    train: SplitReport
    eval: SplitReport
    format: str
    template: str | None = None  # how prompts were rendered (e.g. "tokenizer", "chatml", "alpaca")
    label_counts: tuple[tuple[str, int], ...] | None = None  # classification, train split
    skip_reasons: tuple[str, ...] = ()  # the first few skipped rows, "file, row N: why"
    sources: tuple[str, ...] = field(default_factory=tuple)  # what was read: local paths, hub labels, builtin:NAME
    read: tuple[SourceRead, ...] = ()  # the same sources in detail: local copy or hub dataset, per recipe key

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.label_counts is not None:
            d["label_counts"] = dict(self.label_counts)
        d["skip_reasons"] = list(self.skip_reasons)
        d["sources"] = list(self.sources)
        d["read"] = [asdict(r) for r in self.read]
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
