"""`peftkit data preview`: rendered examples with trained tokens visibly different from context."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ..modeling.tokens import trained_tokens
from .bundle import IGNORE, DataBundle
from .stats import DataStats, compute_stats

TRAINED, CONTEXT, HEADER = "bold green", "dim", "bold cyan"

__all__ = ["DataStats", "compute_stats", "render_preview", "render_stats"]


def render_preview(examples: DataBundle | list[dict], tokenizer, n: int = 3, *, split: str = "train",
                   plain: bool = False) -> Text:
    """The first `n` examples. Styled: trained tokens bold green, context dim. `plain` (no TTY): no styles,
    trained spans wrapped in [[ ]]. Returns a rich Text; print it with console.print (no markup is parsed) or
    str() it."""
    label_names = None
    if isinstance(examples, DataBundle):
        label_names = examples.label_names
        examples = examples.train if split == "train" else examples.eval
    out = Text()
    legend = "trained tokens are [[bracketed]]" if plain else "trained tokens in bold green, context dimmed"
    out.append(f"{min(n, len(examples))} of {len(examples)} {split} examples; {legend}\n", style=None if plain else "italic")
    for i, row in enumerate(examples[:n], 1):
        if "chosen" in row or "desirable" in row:
            _append_preference(out, i, row, tokenizer, plain)
            continue
        labels = row["labels"]
        trained = trained_tokens(labels)
        out.append(f"\n── example {i}: {len(row['input_ids'])} tokens, {trained} trained ──\n",
                   style=None if plain else HEADER)
        if isinstance(labels, int):
            out.append(tokenizer.decode(row["input_ids"], skip_special_tokens=False), style=None if plain else CONTEXT)
            name = label_names[labels] if label_names and 0 <= labels < len(label_names) else str(labels)
            out.append("  → label ", style=None if plain else CONTEXT)
            out.append(f"[[{name}]]" if plain else name, style=None if plain else TRAINED)
        else:
            _append_runs(out, row["input_ids"], labels, tokenizer, plain)
        out.append("\n")
    return out


def _append_preference(out: Text, i: int, row: dict, tokenizer, plain: bool) -> None:
    """The shared prompt once, then each answer with its scored tokens marked like trained ones."""
    answers = [("chosen", row["chosen"]), ("rejected", row["rejected"])] if "chosen" in row else \
        [("desirable" if row["desirable"] else "undesirable", row)]
    cut = row["prompt_len"]
    sizes = ", ".join(f"{name} {len(seq['input_ids']) - cut} tokens" for name, seq in answers)
    out.append(f"\n── example {i}: prompt {cut} tokens; {sizes} ──\n", style=None if plain else HEADER)
    first = answers[0][1]
    out.append(tokenizer.decode(first["input_ids"][:cut], skip_special_tokens=False), style=None if plain else CONTEXT)
    for name, seq in answers:
        out.append(f"\n  {name} → ", style=None if plain else HEADER)
        _append_runs(out, seq["input_ids"][cut:], seq["labels"][cut:], tokenizer, plain)
    out.append("\n")


def _append_runs(out: Text, ids: list[int], labels: list[int], tokenizer, plain: bool) -> None:
    """Decodes runs of equally-masked tokens together, so multi-token characters stay whole."""
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or (labels[end] != IGNORE) != (labels[start] != IGNORE):
            text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
            trained = labels[start] != IGNORE
            if plain:
                out.append(f"[[{text}]]" if trained else text)
            else:
                out.append(text, style=TRAINED if trained else CONTEXT)
            start = end


def render_stats(*stats: DataStats) -> Table:
    """One column per split (e.g. train, eval), one row per measure."""
    table = Table(title="data stats", show_header=True, header_style="bold")
    table.add_column("")
    for s in stats:
        table.add_column(s.split, justify="right")
    rows = [
        ("examples", lambda s: f"{s.examples:,}"),
        ("tokens", lambda s: f"{s.tokens:,}"),
        ("trained tokens", lambda s: f"{s.trained_tokens:,} ({s.trained_tokens / max(s.tokens, 1):.0%})"),
        ("truncated", lambda s: f"{s.truncated:,}"),
        ("dropped (nothing left to train)", lambda s: f"{s.dropped:,}"),
        ("skipped (bad rows)", lambda s: f"{s.skipped:,}"),
        ("length p50 / p90 / p99 / max", lambda s: " / ".join(
            str(s.length_percentiles[k]) for k in ("p50", "p90", "p99", "p100"))),
        ("padding waste, unpacked", lambda s: f"{s.padding_waste_unpacked:.1%} (batch {s.batch_size})"),
        ("padding waste, packed", lambda s: f"{s.padding_waste_packed:.1%}"),
    ]
    if any(s.label_counts for s in stats):
        rows.append(("labels", lambda s: ", ".join(f"{k} {v:,}" for k, v in (s.label_counts or {}).items())))
    for name, cell in rows:
        table.add_row(name, *(cell(s) for s in stats))
    return table
