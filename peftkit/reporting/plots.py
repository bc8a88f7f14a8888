"""Curves as PNG bytes: one metric per figure, every run overlaid in its own colour (the same colour in every
figure), titled, axes labelled with units. matplotlib's object API (no pyplot): no global backend, safe in the
dashboard's server threads."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from .runs import RunView

# matplotlib's tab10: run i gets COLOURS[i % 10] in every plot of a report or the dashboard
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
SMOOTHING = 0.6  # TensorBoard's default: exponential moving average, debiased at the start


@dataclass(frozen=True)
class Curve:
    key: str     # curve row key
    title: str
    ylabel: str
    log_y: bool = False


CURVES = (
    Curve("loss", "Training loss (thin: raw, thick: smoothed)", "loss (nats / trained token; preference: / pair)"),
    Curve("lr", "Learning rate", "learning rate"),
    Curve("grad_norm", "Gradient norm before clipping", "L2 norm", log_y=True),
    Curve("tokens_per_s", "Throughput (since the previous logged step)", "tokens / s (non-pad)"),
    Curve("memory_mb", "Peak memory while training", "MB (CUDA allocated, or process peak RSS on CPU)"),
    Curve("reward_margin", "Preference: reward margin (chosen - rejected)", "margin (nats x beta)"),
    Curve("reward_accuracy", "Preference: reward accuracy", "share of pairs with chosen > rejected"),
)
BY_KEY = {c.key: c for c in CURVES}


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    out, ema, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        n += 1
        ema = weight * ema + (1 - weight) * v
        out.append(ema / (1 - weight ** n))
    return out


def series(run: RunView, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in run.curve if isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]


def has_curve(runs: list[RunView], key: str) -> bool:
    return any(series(r, key)[0] for r in runs)


def curve_png(runs: list[RunView], key: str, colours: dict[str, str] | None = None, *, small: bool = False) -> bytes:
    """`colours`: run name -> colour (default: by position in `runs`)."""
    from matplotlib.figure import Figure

    curve = BY_KEY[key]
    colours = colours or {r.name: COLOURS[i % len(COLOURS)] for i, r in enumerate(runs)}
    fig = Figure(figsize=(4.6, 2.9) if small else (5.7, 3.6), dpi=100)  # two a row in the report's 1180 px
    ax = fig.subplots()
    drawn = False
    for run in runs:
        steps, values = series(run, key)
        if not steps:
            continue
        drawn = True
        colour = colours.get(run.name, COLOURS[0])
        if key == "loss":
            ax.plot(steps, values, color=colour, alpha=0.3, linewidth=1)
            ax.plot(steps, smooth(values), color=colour, linewidth=2, label=run.name)
        else:
            ax.plot(steps, values, color=colour, linewidth=1.8, marker="o" if len(steps) < 30 else None,
                    markersize=3, label=run.name)
    ax.set_title(curve.title, fontsize=12)
    ax.set_xlabel("optimizer step", fontsize=10)
    ax.set_ylabel(curve.ylabel, fontsize=9)
    if curve.log_y and drawn and all(v > 0 for r in runs for v in series(r, key)[1]):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=ax.transAxes, color="#777")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
