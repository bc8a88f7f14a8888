"""Health flags: where a run's curves leave their usual range (loss spikes, non-finite steps, grad-norm
explosions, preference margins and reward accuracy), each a short sentence with the step it happened at."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from .runs import RunView

SPIKE = 2.0      # a loss above SPIKE x the median of the previous WINDOW logged losses
EXPLOSION = 5.0  # a gradient norm above EXPLOSION x the median of the previous WINDOW logged norms
WINDOW = 5


@dataclass(frozen=True)
class Flag:
    level: str  # ok | warn | bad
    text: str


def _jumps(curve, key: str, factor: float) -> list[tuple[int, float, float]]:
    """(step, value, the median before it) where value > factor x that median."""
    out, seen = [], []
    for row in curve:
        value = row.get(key)
        if value is None or not math.isfinite(value):
            continue
        if len(seen) >= 3 and value > factor * median(seen[-WINDOW:]) > 0:
            out.append((row["step"], value, median(seen[-WINDOW:])))
        seen.append(value)
    return out


def health(run: RunView) -> list[Flag]:
    flags: list[Flag] = []
    curve = run.curve
    nonfinite = [r["step"] for r in curve if not math.isfinite(r.get("loss", 0.0))]
    if nonfinite:
        flags.append(Flag("bad", f"non-finite loss at step(s) {', '.join(map(str, nonfinite[:5]))}"))
    train = run.metrics.train if run.metrics else None
    if train and train.skipped_nonfinite:
        flags.append(Flag("bad", f"{train.skipped_nonfinite} step(s) skipped for a NaN/inf loss or gradient "
                                 "(train.skip_nonfinite)"))
    if train and train.fp16_overflow_steps:
        flags.append(Flag("warn", f"{train.fp16_overflow_steps} fp16 step(s) skipped by the loss scaler"))
    for step, value, before in _jumps(curve, "loss", SPIKE)[:3]:
        flags.append(Flag("warn", f"loss spike at step {step}: {value:.4g} (median of the previous "
                                  f"{WINDOW} logged: {before:.4g})"))
    for step, value, before in _jumps(curve, "grad_norm", EXPLOSION)[:3]:
        flags.append(Flag("warn", f"gradient norm explosion at step {step}: {value:.4g} (median before: "
                                  f"{before:.4g})"))
    if run.preference and curve:
        last = curve[-1]
        if last.get("reward_margin", 0.0) <= 0 and last["step"] > 1:
            flags.append(Flag("warn", f"reward margin {last['reward_margin']:.4g} at step {last['step']}: the "
                                      "policy does not yet prefer the chosen answers"))
        ev = run.metrics.eval if run.metrics else None
        if ev and "reward_accuracy" in ev.after:
            acc = ev.after["reward_accuracy"]
            flags.append(Flag("ok" if acc > 0.5 else "warn", f"held-out reward accuracy {acc:.2f} after training"
                              + (f" (before: {ev.before['reward_accuracy']:.2f})"
                                 if ev.before and "reward_accuracy" in ev.before else "")))
    ev = run.metrics.eval if run.metrics else None
    if ev and ev.before and "loss" in ev.before and "loss" in ev.after and ev.after["loss"] > ev.before["loss"]:
        flags.append(Flag("warn", f"held-out loss rose: {ev.before['loss']:.4f} -> {ev.after['loss']:.4f}"))
    if not run.finished:
        flags.append(Flag("warn", "no metrics.json: training in progress, or stopped before its end"))
    if not any(f.level != "ok" for f in flags):
        flags.insert(0, Flag("ok", "no loss spikes, non-finite steps or gradient-norm explosions"))
    return flags
