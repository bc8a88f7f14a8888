"""Bench results on disk: NAME.json (everything), NAME.md (the table a reader wants), NAME.png (loss vs time)."""

from __future__ import annotations

import json
from pathlib import Path

from ..rundir import write_atomic

ROWS = (  # (metric, label, format, which way is better)
    ("trained_tokens_per_s", "trained tokens/s", "{:,.0f}", "higher"),
    ("tokens_per_s", "all tokens/s (non-pad)", "{:,.0f}", "higher"),
    ("peak_memory_mb", "peak memory (MB)", "{:,.0f}", "lower"),
    ("wall_s", "wall time (s)", "{:,.1f}", "lower"),
    ("train_s", "training time (s)", "{:,.1f}", "lower"),
    ("final_train_loss", "final train loss (last 5 steps)", "{:.4f}", "lower"),
    ("eval_loss", "eval loss", "{:.4f}", "lower"),
)
# preference runs: held-out pair metrics, compared as differences (peftkit - peer)
PREFERENCE_ROWS = (
    ("eval_reward_accuracy", "eval reward accuracy", "{:.3f}", "higher"),
    ("eval_preference_accuracy", "eval preference accuracy", "{:.3f}", "higher"),
    ("eval_reward_margin", "eval reward margin", "{:.4f}", "higher"),
)
LABELS = {"peftkit.train": "peftkit", "trl.SFTTrainer": "TRL SFTTrainer", "trl.DPOTrainer": "TRL DPOTrainer",
          "trl.KTOTrainer": "TRL KTOTrainer", "trl.experimental.orpo.ORPOTrainer": "TRL ORPOTrainer",
          "trl.experimental.cpo.CPOTrainer": "TRL CPOTrainer"}


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _label(r: dict, route: str) -> str:
    trainer = r["routes"][route]["settings"]["defaults"]["trainer"]
    return LABELS.get(trainer, trainer.split(" (")[0])  # e.g. "transformers.Trainer" for classification


def markdown(r: dict) -> str:
    peer = next(route for route in r["routes"] if route != "peftkit")
    sections = (_header(r), _table(r, peer), _utilisation(r["utilisation"]), _goals(r), _settings(r, peer),
                _runs(r), ["## Reproduce", "", "```", r["command"], "```"])
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _header(r: dict) -> list[str]:
    m, mach, v = r["method"], r["machine"], r["machine"]["versions"]
    peer = _label(r, next(route for route in r["routes"] if route != "peftkit"))
    cuda = r["routes"]["peftkit"]["runs"][0]["memory_kind"].startswith("cuda")
    overrides = f" with {' '.join(r['overrides'])}" if r["overrides"] else ""
    how = (f"Recipe `{r['recipe_file']}`{overrides}; {m['repeats']} run(s) per route in separate processes, "
           f"alternating ({' '.join(m['order'])}); medians shown. Token rates leave out the first "
           f"{m['warmup_steps_excluded']} step(s) of each run (warm-up). Peak memory: "
           f"{'CUDA max_memory_allocated' if cuda else 'peak RSS of the route process'}.")
    isa = " ".join(f for f, on in (mach.get("cpu_isa") or {}).items() if on) or "not recorded"
    prec = r.get("precision") or {}
    chosen = "/".join(str((prec.get(k) or {}).get("value", "?")) for k in ("model_dtype", "compute_dtype",
                                                                           "mixed_precision"))
    where = (f"Machine: {mach['gpu'] or mach['cpu']} (CPU flags: {isa}), {mach['torch_threads']} torch threads; "
             f"recipe precision (weights/4-bit compute/autocast): {chosen}; torch {v.get('torch')}, "
             f"transformers {v.get('transformers')}, peft {v.get('peft')}, trl {v.get('trl')}, bitsandbytes "
             f"{v.get('bitsandbytes')}; load average {_loads(mach.get('load_average'))} before, "
             f"{_loads(mach.get('load_average_after'))} after; {r['created_utc']}.")
    return [f"# Bench: `{r['name']}` — peftkit vs {peer}", "", how, "", where]


def _table(r: dict, peer: str) -> list[str]:
    med, ratios, mfu = r["medians"], r["ratios"], r["utilisation"]["mfu"]
    lines = [f"| metric | peftkit | {_label(r, peer)} | peftkit / {peer} |", "| --- | ---: | ---: | ---: |"]
    for key, label, fmt, better in ROWS:
        cells = (_fmt(med["peftkit"][key], fmt), _fmt(med[peer][key], fmt), _fmt(ratios[key], "{:.2f}x"))
        lines.append(f"| {label} ({better} is better) | {' | '.join(cells)} |")
    diffs = r.get("differences") or {}
    for key, label, fmt, better in PREFERENCE_ROWS if diffs else ():
        diff = _fmt(diffs.get(key), "{:+.3f}") + " (difference)" if diffs.get(key) is not None else "n/a"
        cells = (_fmt(med["peftkit"][key], fmt), _fmt(med[peer][key], fmt), diff)
        lines.append(f"| {label} ({better} is better) | {' | '.join(cells)} |")
    pct = "{:.1%}" if min(v or 0 for v in mfu.values()) >= 0.01 else "{:.3%}"  # tiny test models: many digits
    cells = (_fmt(mfu["peftkit"], pct), _fmt(mfu[peer], pct), _fmt(_div(mfu["peftkit"], mfu[peer]), "{:.2f}x"))
    lines.append(f"| model FLOPs utilisation | {' | '.join(cells)} |")
    return lines


def _utilisation(u: dict) -> list[str]:
    p = u["matmul_probe"]
    text = (f"Utilisation: {u['flops_per_token'] / 1e6:,.1f} MFLOP per token = {u['formula']}, with "
            f"N_frozen = {u['frozen_linear_params']:,}, N_trainable = {u['trainable_params']:,}, L = {u['layers']}, "
            f"T = {u['mean_example_tokens']:.0f}, d_attn = {u['attn_width']}; times all tokens/s, over the "
            f"{p['dtype']} {p['size']}x{p['size']} matmul rate measured at the start: {p['gflops']:,.0f} GFLOP/s "
            f"({p['device']}, {p['threads']} threads).")
    return [text]


def _goals(r: dict) -> list[str]:
    if "eval_pairs" in r["goals"]:
        return _preference_goals(r)
    g, ratios = r["goals"], r["ratios"]
    met = {k: "met" if v else "NOT met" for k, v in g["met"].items()}
    tps, mem = _fmt(ratios["trained_tokens_per_s"], "{:.2f}x"), _fmt(ratios["peak_memory_mb"], "{:.2f}x")
    return [
        "## Goals (performance issue)", "",
        f"- trained tokens/s >= {g['trained_tokens_per_s_ratio_min']}x TRL: {tps} — {met['trained_tokens_per_s']}",
        f"- peak memory <= {g['peak_memory_ratio_max']}x TRL: {mem} — {met['peak_memory']}",
        (f"- eval loss within {g['eval_loss_rel_diff_max']:.0%} of TRL's: "
         f"{_fmt(g['eval_loss_rel_diff'], '{:.2%}')} apart — {met['eval_loss']}"),
    ]


def _preference_goals(r: dict) -> list[str]:
    g, ratios = r["goals"], r["ratios"]
    met = {k: "met" if v else "NOT met" for k, v in g["met"].items()}
    tps, mem = _fmt(ratios["trained_tokens_per_s"], "{:.2f}x"), _fmt(ratios["peak_memory_mb"], "{:.2f}x")
    lines = [
        "## Goals (preference tuning issue)", "",
        f"- trained tokens/s >= {g['trained_tokens_per_s_ratio_min']}x TRL: {tps} — {met['trained_tokens_per_s']}",
        f"- peak memory <= {g['peak_memory_ratio_max']}x TRL: {mem} — {met['peak_memory']}",
    ]
    for name in ("reward_accuracy", "preference_accuracy"):
        diff, noise = g[f"{name}_diff"], g[f"{name}_noise"]
        lines.append(f"- eval {name.replace('_', ' ')} equal within noise (|difference| <= {_fmt(noise, '{:.3f}')}, "
                     f"{g['accuracy_noise_z']} sd on {g['eval_pairs']} pairs): {_fmt(diff, '{:+.3f}')} — {met[name]}")
    return lines


def _settings(r: dict, peer: str) -> list[str]:
    check = r["settings_check"]
    verdict = "identical in every run." if check["ok"] else "MISMATCHED: " + "; ".join(check["mismatches"])
    lines = [
        "## Settings", "",
        ("Matched settings (base, quantization, adapter shape and targets, the examples' tokens and labels, max "
         f"length, batch, steps, lr, schedule, seed{_objective(r)}): {verdict}"), "",
        f"| default each route chose | peftkit | {_label(r, peer)} |", "| --- | --- | --- |",
    ]
    ours, theirs = r["routes"]["peftkit"]["settings"]["defaults"], r["routes"][peer]["settings"]["defaults"]
    for key in dict.fromkeys([*ours, *theirs]):
        lines.append(f"| {key} | {ours.get(key, '')} | {theirs.get(key, '')} |")
    return lines


def _objective(r: dict) -> str:
    p = r["routes"]["peftkit"]["settings"]["matched"].get("preference")
    if not p:
        return ""
    keys = ", ".join(f"{k} {v}" for k, v in p.items() if k not in ("objective", "reference"))
    return f", objective {p['objective']} ({keys}), reference {p['reference']}"


def _runs(r: dict) -> list[str]:
    pairs = "eval_reward_accuracy" in r["routes"]["peftkit"]["runs"][0]
    extra = (" reward acc | preference acc |", " ---: | ---: |") if pairs else ("", "")
    lines = ["## Runs", "", "| route | run | trained tok/s | tok/s | peak MB | wall s | eval loss |" + extra[0],
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + extra[1]]
    for route, data in r["routes"].items():
        for i, x in enumerate(data["runs"], 1):
            accuracies = (f" {_fmt(x['eval_reward_accuracy'], '{:.3f}')} | "
                          f"{_fmt(x['eval_preference_accuracy'], '{:.3f}')} |" if pairs else "")
            lines.append(f"| {route} | {i} | {x['trained_tokens_per_s']:,.0f} | {x['tokens_per_s']:,.0f} | "
                         f"{x['peak_memory_mb']:,.0f} | {x['wall_s']:.1f} | {x['eval_loss']:.4f} |{accuracies}")
    return lines


def _loads(values) -> str:
    return "n/a" if not values else "/".join(f"{v:.2f}" for v in values)


def _div(a, b):
    return a / b if a is not None and b else None


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = {"peftkit": "tab:blue", "trl": "tab:orange"}
    for route, data in r["routes"].items():
        for i, run in enumerate(data["runs"]):
            if not run["loss_curve"]:
                continue
            t, loss = zip(*run["loss_curve"])
            ax.plot(t, loss, color=colours.get(route), alpha=1.0 if i == 0 else 0.45, linewidth=1.2,
                    label=_label(r, route) + (f" (run {i + 1})" if len(data["runs"]) > 1 else ""))
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("train loss")
    ax.set_title(f"{r['name']}: train loss vs time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(r: dict, out_dir: Path, name: str) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / f"{name}{ext}" for ext in (".json", ".md", ".png"))
    write_atomic(json_path, json.dumps(r, indent=1) + "\n")
    write_atomic(md_path, markdown(r))
    plot(r, png_path)
    return json_path, md_path, png_path
