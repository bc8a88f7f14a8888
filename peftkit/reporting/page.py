"""`peftkit report`: one self-contained HTML page (PNG plots embedded as base64, inline CSS, no script, no
network) for one or more run directories, overlaid in one colour per run."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from ..rundir import write_atomic
from .health import health
from .plots import COLOURS, CURVES, curve_png, has_curve
from .runs import RunView, load_run

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222; padding: 0 1em; }
h1 { font-size: 1.7em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ddd; padding: 3px 9px; }
th { background: #f6f6f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; }
.ok { color: #1a7f37; } .warn { color: #9a6700; } .bad { color: #cf222e; font-weight: 600; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: .5em; margin: .2em 0; max-height: 12em; overflow: auto; }
.better { color: #1a7f37; } .worse { color: #cf222e; }
"""
LOWER_IS_BETTER = ("loss", "perplexity", "logps_rejected", "rewards_rejected")
SAMPLES = 4


def _e(value) -> str:
    return html.escape(str(value))


def _num(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(headers: list[str], rows: list[list[str]], *, id: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    attr = f' id="{id}"' if id else ""
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def _td(value, num: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{_num(value) if num else _e(value)}</td>"


def eval_table(runs: list[RunView]) -> str:
    rows = []
    for run in runs:
        ev = run.metrics.eval if run.metrics else None
        if ev is None:
            continue
        for name, after in ev.after.items():
            before = (ev.before or {}).get(name)
            change, cls = "", ""
            if before is not None:
                diff = after - before
                change = f"{diff:+.4f}"
                lower = any(name.startswith(k) or name == k for k in LOWER_IS_BETTER)
                cls = "" if diff == 0 else ("better" if (diff < 0) == lower else "worse")
            rows.append([_td(run.name), _td(name), _td(before, True), _td(after, True), _td(change, False, cls)])
    if not rows:
        return "<p>No eval yet (metrics.json is written at the end of training).</p>"
    return _table(["run", "metric", "before training", "after training", "change"], rows, id="eval-table")


def _summary(run: RunView) -> str:
    t = run.metrics.train if run.metrics else None
    last = run.curve[-1] if run.curve else {}
    items = [("steps", f"{last.get('step', 0)} of {run.max_steps or '?'}" + ("" if run.finished else " (training)"))]
    if t:
        items += [("final loss", _num(t.final_loss)), ("tokens/s (non-pad)", f"{t.tokens_per_s:,.0f}"),
                  ("trained tokens/s", f"{t.trained_tokens_per_s:,.0f}"), ("training time", f"{t.train_s:,.1f} s"),
                  ("wall time", f"{t.wall_s:,.1f} s (eval {t.eval_share:.0%})"),
                  ("peak memory", f"{t.peak_memory_mb:,.0f} MB ({t.peak_memory.get('kind', '')})")]
    if run.meta:
        m = run.meta
        items += [("base", f"{m.base.model} ({m.base.kind})"), ("objective", m.objective),
                  ("trainable parameters", f"{m.params.get('trainable', 0):,} of {m.params.get('total', 0):,}"),
                  ("device", f"{m.device}, {m.num_processes} process(es)")]
    return _table(["", ""], [[_td(k), _td(v)] for k, v in items])


def data_table(run: RunView) -> str:
    data = run.meta.data if run.meta else {}
    rows = []
    for split in ("train", "eval"):
        d = data.get(split) or {}
        if not d:
            continue
        share = d.get("trained_tokens", 0) / max(d.get("tokens", 0), 1)
        rows.append([_td(split), _td(d.get("examples"), True), _td(d.get("tokens"), True),
                     _td(d.get("trained_tokens"), True), _td(f"{share:.1%}", True), _td(d.get("truncated"), True),
                     _td(d.get("dropped"), True), _td(d.get("skipped"), True)])
    if not rows:
        return "<p>No data report recorded.</p>"
    src = ", ".join(map(str, data.get("sources") or []))
    note = (f"<p>format {_e(data.get('format', '?'))}, template {_e(data.get('template', '?'))}"
            f"{', from ' + _e(src) if src else ''}. Padding waste is not recorded in the run: "
            "<code>peftkit data stats</code> measures it for a recipe.</p>")
    return _table(["split", "examples", "tokens", "trained tokens", "trained share", "truncated", "dropped",
                   "skipped"], rows) + note


def choices_table(run: RunView) -> str:
    m = run.meta
    if m is None:
        return "<p>meta.json not written yet.</p>"
    rows = []
    gc = m.gradient_checkpointing
    if gc:
        rows.append(["gradient checkpointing (recompute)", "on" if gc.get("enabled") else "off", gc.get("why", "")])
    rows.append(["packing", "on" if m.packing else "off", "data.packing as resolved"])
    for name, setting in (m.precision or {}).items():
        if isinstance(setting, dict):
            rows.append([f"precision: {name}", f"{setting.get('value')} ({setting.get('source', '')})",
                         setting.get("why", "")])
    if m.batch_size:
        b = m.batch_size
        rows.append(["batch size", f"{b.get('batch_size')} x {b.get('grad_accum')} accumulation",
                     f"cap {b.get('cap_mb', 0):,.0f} MB: {b.get('cap_why', '')}"])
    if m.reference:
        r = m.reference
        rows.append(["reference model", f"{r.get('mode')}: {r.get('model', '')}", r.get("why", "")])
    return _table(["choice", "value", "why"], [[_td(a), _td(b), _td(c)] for a, b, c in rows])


def samples_html(run: RunView) -> str:
    if run.eval_record and run.eval_record.samples:  # `peftkit eval`: base vs adapter (vs merged)
        parts = []
        for i, s in enumerate(run.eval_record.samples[:SAMPLES], 1):
            preds = "".join(f"<tr><th>{_e(name)}</th><td><pre>{_e(p)}</pre></td></tr>"
                            for name, p in s.get("predictions", {}).items())
            parts.append(f"<h4>sample {i}</h4><table><tr><th>prompt</th><td><pre>{_e(s.get('prompt', ''))}</pre>"
                         f"</td></tr><tr><th>reference</th><td><pre>{_e(s.get('reference', ''))}</pre></td></tr>"
                         f"{preds}</table>")
        return "<p>From <code>peftkit eval</code> (eval.json): base vs adapter on held-out rows.</p>" + "".join(parts)
    samples = run.metrics.eval.samples_after if run.metrics else []
    if not samples:
        return "<p>No generations recorded (eval.metrics without a generating metric).</p>"
    parts = [f"<h4>sample {i}</h4><table><tr><th>prompt</th><td><pre>{_e(s.get('prompt', ''))}</pre></td></tr>"
             f"<tr><th>reference</th><td><pre>{_e(s.get('reference', ''))}</pre></td></tr>"
             f"<tr><th>adapter</th><td><pre>{_e(s.get('prediction', ''))}</pre></td></tr></table>"
             for i, s in enumerate(samples[:SAMPLES], 1)]
    return ("<p>The adapter's answers at the end of training; run <code>peftkit eval RUN</code> for base vs "
            "adapter side by side.</p>" + "".join(parts))


def health_html(run: RunView) -> str:
    return "<ul>" + "".join(f'<li class="{f.level}">{_e(f.text)}</li>' for f in health(run)) + "</ul>"


def render(runs: list[RunView]) -> str:
    colours = {r.name: COLOURS[i % len(COLOURS)] for i, r in enumerate(runs)}
    legend = "".join(f'<li><span class="swatch" style="background:{colours[r.name]}"></span>{_e(r.name)} '
                     f'<small>({_e(r.path)})</small></li>' for r in runs)
    plots = "".join(_img(curve_png(runs, c.key, colours), c.title) for c in CURVES if has_curve(runs, c.key))
    parts = [f"<h1>peftkit report: {_e(', '.join(r.name for r in runs))}</h1>",
             f"<p>Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. One colour per run "
             "in every plot:</p>", f"<ul>{legend}</ul>",
             "<h2>Curves</h2>", f'<div class="plots">{plots or "<p>No logged steps yet.</p>"}</div>',
             "<h2>Eval before / after</h2>", eval_table(runs)]
    for run in runs:
        colour = colours[run.name]
        parts += [f'<h2 id="run-{_e(run.name)}"><span class="swatch" style="background:{colour}"></span>'
                  f"{_e(run.name)}</h2>", _summary(run), "<h3>Health</h3>", health_html(run)]
        if len(runs) > 1 and run.curve:
            parts.append('<div class="plots">' + "".join(
                _img(curve_png([run], key, colours, small=True), f"{run.name}: {key}")
                for key in (c.key for c in CURVES) if has_curve([run], key)) + "</div>")
        parts += ["<h3>Choices <code>auto</code> made</h3>", choices_table(run),
                  "<h3>Data</h3>", data_table(run), "<h3>Sample generations</h3>", samples_html(run)]
    title = "peftkit report: " + ", ".join(r.name for r in runs)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """The report of `run_dirs` written to `out` (default: one run's own report.html; several: ./report.html)."""
    runs = [load_run(p) for p in run_dirs]
    target = Path(out) if out else runs[0].path / "report.html" if len(runs) == 1 else Path("report.html")
    write_atomic(target, render(runs))
    return target
