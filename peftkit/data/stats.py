"""`peftkit data stats`: what a dataset costs and how much of it is trained."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from ..modeling.tokens import trained_tokens
from .bundle import DataBundle, sequences

PERCENTILES = (50, 90, 95, 99, 100)


@dataclass(frozen=True)
class DataStats:
    """One split. Padding waste = share of batch positions that are padding, batching `batch_size` examples in
    data order: right-padded to the longest row (unpacked) or concatenated into one row (packed). Preference pairs
    count both answers' sequences (tokens, lengths, padding: a batch of B pairs is 2B rows)."""

    split: str
    examples: int
    tokens: int
    trained_tokens: int
    truncated: int
    dropped: int
    skipped: int
    length_percentiles: dict[str, int]
    batch_size: int
    padding_waste_unpacked: float
    padding_waste_packed: float
    label_counts: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compute_stats(bundle: DataBundle, *, batch_size: int, split: str = "train",
                  pad_to_multiple_of: int | None = None) -> DataStats:
    rows = bundle.train if split == "train" else bundle.eval
    report = bundle.report.train if split == "train" else bundle.report.eval
    seqs = [seq for r in rows for seq in sequences(r)]
    lengths = [len(seq["input_ids"]) for seq in seqs]
    batch_size *= len(seqs) // max(len(rows), 1) or 1
    return DataStats(
        split=split,
        examples=len(rows),
        tokens=sum(lengths),
        trained_tokens=sum(trained_tokens(seq["labels"]) for seq in seqs),
        truncated=report.truncated,
        dropped=report.dropped,
        skipped=report.skipped,
        length_percentiles=percentiles(lengths),
        batch_size=batch_size,
        padding_waste_unpacked=padding_waste(lengths, batch_size, packed=False, multiple=pad_to_multiple_of),
        padding_waste_packed=padding_waste(lengths, batch_size, packed=True, multiple=pad_to_multiple_of),
        label_counts=_label_counts(rows, bundle.label_names),
    )


def _label_counts(rows: list[dict], names: tuple[str, ...] | None) -> dict[str, int] | None:
    if names is None:
        return None
    counts = Counter(r["labels"] for r in rows)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


def percentiles(lengths: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles; p100 is the longest."""
    if not lengths:
        return {f"p{p}": 0 for p in PERCENTILES}
    s = sorted(lengths)
    return {f"p{p}": s[max(0, -(-p * len(s) // 100) - 1)] for p in PERCENTILES}


def padding_waste(lengths: list[int], batch_size: int, *, packed: bool, multiple: int | None = None) -> float:
    real = padded = 0
    for i in range(0, len(lengths), batch_size):
        batch = lengths[i : i + batch_size]
        width = sum(batch) if packed else max(batch)
        if multiple:
            width = -(-width // multiple) * multiple
        real += sum(batch)
        padded += width if packed else width * len(batch)
    return 0.0 if padded == 0 else round(1 - real / padded, 4)
