"""`peftkit` subcommands: parse arguments, call the API, print. User mistakes exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from rich.console import Console
from rich.markup import escape

from .errors import PeftkitError

err = Console(stderr=True)
out = Console()


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe keys, e.g. train.lr=1e-4")


def cmd_train(args) -> int:
    from pathlib import Path

    from . import load_recipe, train

    overrides = list(args.overrides)
    if args.resume:
        # `peftkit train --resume RUN_DIR [KEY=VALUE ...]`: the run directory's resolved recipe is the recipe
        if args.recipe and "=" in args.recipe:
            overrides.insert(0, args.recipe)
            args.recipe = None
        recipe = load_recipe(args.recipe or Path(args.resume) / "recipe.yaml", overrides)
        result = train(recipe, run_dir=args.resume, resume=True, console=err)
    else:
        if not args.recipe:
            raise PeftkitError("train: give a recipe file, or --resume RUN_DIR")
        recipe = load_recipe(args.recipe, overrides)
        result = train(recipe, run_dir=args.run_dir, force=args.force, console=err)
    if not result.main:  # another process of a multi-process run; the main one reports
        return 0
    ev = result.metrics.eval
    for label, scores in (("before", ev.before), ("after", ev.after)):
        if scores:
            out.print(f"{label:>6}: " + "  ".join(f"{k}={v:.4f}" for k, v in scores.items()), highlight=False)
    _report_after_train(result.run_dir)
    out.print(str(result.run_dir), highlight=False)
    return 0


def _report_after_train(run_dir) -> None:
    """RUN/report.html; the run is complete before this, so a failure to plot only costs the page."""
    try:
        from .reporting import write_report

        err.print(f"report: {write_report([run_dir])}", highlight=False)
    except ImportError as exc:  # matplotlib is the `report` extra
        err.print(f"report.html not written: pip install 'peftkit[report]' ({exc})", highlight=False)
    except Exception as exc:  # noqa: BLE001 -- the run directory is already complete; say why and carry on
        err.print(f"report.html not written: {type(exc).__name__}: {exc}", highlight=False, markup=False)


def cmd_report(args) -> int:
    try:
        from .reporting import write_report
    except ImportError as exc:
        raise PeftkitError(f"peftkit report needs matplotlib: pip install 'peftkit[report]' ({exc})") from None

    out.print(str(write_report(args.run_dirs, args.out)), highlight=False)
    return 0


def cmd_ui(args) -> int:
    try:
        from .dashboard.server import run_dashboard
    except ImportError as exc:  # fastapi / uvicorn / matplotlib: the `ui` extra
        raise PeftkitError(f"peftkit ui needs the ui extra: pip install 'peftkit[ui]' ({exc})") from None

    run_dashboard(args.runs, host=args.host, port=args.port, chat=args.chat, console=err)
    return 0


def _bundle(args):
    from . import load_recipe
    from .data.prepare import prepare_data

    recipe = load_recipe(args.recipe, args.overrides)
    prepared = prepare_data(recipe, source_file=args.recipe)
    for source in prepared.data.report.read:  # say when the hub stood in for an absent local copy
        if source.read == "hub":
            err.print(source.describe(), highlight=False, markup=False, soft_wrap=True)
    return recipe, prepared.tokenizer, prepared.data


def cmd_data_preview(args) -> int:
    from .data.preview import render_preview

    _, tok, bundle = _bundle(args)
    out.print(render_preview(bundle, tok, args.n, split=args.split, plain=args.plain or not out.is_terminal))
    return 0


def cmd_data_stats(args) -> int:
    from .data.preview import compute_stats, render_stats

    recipe, _, bundle = _bundle(args)
    t = recipe.train
    batch = t.effective_batch if t.batch_size == "auto" else t.batch_size  # auto: measured at train time, at most this
    tr = compute_stats(bundle, batch_size=batch)
    ev = compute_stats(bundle, batch_size=recipe.eval.batch_size or batch, split="eval")
    if args.json:
        print(json.dumps({"train": tr.to_dict(), "eval": ev.to_dict(), "report": bundle.report.to_dict()}, indent=2))
    else:
        out.print(render_stats(tr, ev))
    return 0


def cmd_eval(args) -> int:
    from rich.table import Table

    from . import evaluate
    from .evaluation.compare import table_json

    if args.privacy_audit:
        return _privacy_audit([args.target, *args.compare], as_json=args.json)
    table = evaluate([args.target, *args.compare], merged=not args.no_merged)
    if args.json:
        print(table_json(table))
        return 0
    names = table.metric_names()
    view = Table(title=f"{table.recipe}: {table.examples} held-out examples")
    for col in ("model", "kind", *names, "s"):
        view.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for r in table.rows:
        view.add_row(r.name, r.kind, *(f"{r.metrics[n]:.4f}" if n in r.metrics else "" for n in names), f"{r.seconds:.0f}")
    out.print(view)
    for i, s in enumerate(table.samples, 1):
        out.print(f"[bold]sample {i}[/] reference: {escape(s['reference'])}", highlight=False)
        for name, pred in s["predictions"].items():
            out.print(f"  {escape(name)}: {escape(pred)}", highlight=False)
    return 0


def _privacy_audit(run_dirs: list[str], *, as_json: bool) -> int:
    from rich.table import Table

    from pathlib import Path

    from .privacy.audit import privacy_audit
    from .rundir import write_json

    rows = [r.to_dict() for r in privacy_audit(run_dirs)]
    write_json(Path(run_dirs[0]) / "privacy_audit.json", {"runs": rows})
    if as_json:
        print(json.dumps({"runs": rows}, indent=2))
        return 0
    view = Table(title="membership inference on canaries (loss threshold)")
    for col in ("run", "epsilon", "DP bound", "canaries", "advantage", "AUC", "loss trained / held out"):
        view.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        eps = "not private" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        bound = "" if r["bound"] is None else f"{r['bound']:.3f}"
        view.add_row(r["run"], eps, bound, str(r["canaries"]), f"{r['advantage']:.3f}", f"{r['auc']:.3f}",
                     f"{r['member_loss']:.3f} / {r['held_out_loss']:.3f}")
    out.print(view)
    return 0


def cmd_bench(args) -> int:
    from . import bench

    result = bench(args.recipe, args.overrides, vs=args.vs, repeats=args.repeats, warmup_steps=args.warmup_steps,
                       name=args.name, out_dir=args.out, console=err, keep_work=args.keep_work)
    if args.json:
        print(json.dumps(result.results, indent=1))
    else:
        out.print(result.md_path.read_text(), markup=False, highlight=False)
        out.print(f"wrote {result.json_path}, {result.md_path}, {result.png_path}", highlight=False)
    return 0


def cmd_merge(args) -> int:
    from . import merge

    result = merge(args.run_dir, out=args.out, dtype=args.dtype, force=args.force, check=not args.no_check, console=err)
    out.print(str(result.out_dir), highlight=False)
    return 0


def cmd_export(args) -> int:
    from . import export

    result = export(args.run_dir, format=args.format, out=args.out, gguf_type=args.gguf_type, dtype=args.dtype,
                    force=args.force, check=not args.no_check, modelfile=not args.no_modelfile, console=err)
    for note in result.notes:
        err.print(note, highlight=False)
    out.print(str(result.out), highlight=False)
    return 0


def cmd_plan(args) -> int:
    from rich.table import Table

    from . import load_recipe, plan
    from .planning.cards import parse_memory

    memory = parse_memory(args.memory) if args.memory is not None else None
    recipe = load_recipe(args.recipe, args.overrides)
    result = plan(recipe, memory=memory, device=args.device, config_file=args.config)
    measured = None
    if args.measure:  # loads the weights and data here and steps them (peftkit.planning.compare)
        from .planning.compare import measure_plan

        measured = measure_plan(recipe, config_file=args.config)
    if args.json:
        print(json.dumps({**result.to_dict(), **({"measured": measured.to_dict()} if measured else {})}, indent=2))
        return 0
    est, gib = result.estimate, 2**30
    s = est.settings
    view = Table(title=f"{result.recipe} on {s.device}: {result.base} ({result.config_source})", title_justify="left")
    for col in ("", "GiB", "when", "what"):
        view.add_column(col, justify="right" if col == "GiB" else "left")
    for line in est.lines:
        view.add_row(line.label, f"{line.bytes / gib:.2f}", line.phase, escape(line.note))
    view.add_row("[bold]peak[/]", f"[bold]{est.peak_bytes / gib:.2f}[/]", "", "held + max(train, eval) + overhead")
    out.print(view)
    out.print(f"assumed: weights {s.dtype}, activations {s.activations}{' (autocast)' if s.autocast else ''}, "
              f"{s.attention} attention, recompute {'on' if s.recompute else 'off'} ({s.recompute_why}), "
              f"{s.tokens_per_step:,} tokens per micro-batch", highlight=False)
    out.print("fits: " + "  ".join(f"{card} {'yes' if ok else 'no'}" for card, ok in result.fits.items()),
              highlight=False)
    if memory is not None:
        verdict = "fits" if est.peak_bytes <= memory else "does not fit"
        out.print(f"{args.memory}: {verdict} ({est.peak_bytes / gib:.2f} GiB of {memory / gib:.2f} GiB)", highlight=False)
        for i, step in enumerate(result.advice, 1):
            out.print(f"  {i}. {' '.join(shlex.quote(o) for o in step.overrides)}  -> {step.peak_bytes / gib:.2f} GiB"
                      f"{' (fits)' if step.fits else ''}: {step.change}", highlight=False)
        if result.advice and not result.advice[-1].fits:
            out.print("  even with all of these it does not fit: a smaller base model, or a larger card", highlight=False)
    for line in measured.summary() if measured else ():
        out.print(line, highlight=False)
    return 0


def cmd_recipes_validate(args) -> int:
    from . import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.show:
        from .recipe import recipe_to_yaml

        out.print(recipe_to_yaml(recipe), highlight=False, markup=False)
    else:
        out.print(f"{args.recipe}: ok ({recipe.name})", highlight=False)
    return 0


def cmd_recipes_keys(args) -> int:
    from .recipe.keys import describe_keys

    for key, kind, default, doc in describe_keys():
        out.print(f"[bold]{key}[/] ({kind}, default {default}): {doc}", highlight=False)
    return 0


def cmd_models_list(args) -> int:
    from .modeling.zoo import list_models

    rows = list_models()
    if args.json:
        print(json.dumps([r.__dict__ | {"path": str(r.path) if r.path else None} for r in rows], indent=2))
        return 0
    for r in rows:
        state = f"pulled: {r.path}" if r.pulled else "not pulled (peftkit models pull " + r.alias + ")"
        out.print(f"[bold]{r.alias}[/]  {escape(r.description)}  {escape('[' + state + ']')}", highlight=False)
    return 0


def cmd_models_pull(args) -> int:
    from .modeling.zoo import pull

    out.print(str(pull(args.name, force=args.force)), highlight=False)
    return 0


def cmd_doctor(args) -> int:
    from .doctor import doctor_report, render_report

    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out.print(render_report(report), highlight=False)
    return 0


def cmd_serve(args) -> int:
    try:
        from .serving.app import Limits
        from .serving.server import serve
    except ImportError as exc:  # fastapi / uvicorn are the optional `serve` extra
        raise PeftkitError(f"peftkit serve needs the serve extra: pip install 'peftkit[serve]' ({exc})") from None

    limits = Limits(max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
                    max_concurrent=args.max_concurrent, max_body_bytes=args.max_body_bytes)
    serve(args.runs, host=args.host, port=args.port, api_key=args.api_key or os.environ.get("PEFTKIT_API_KEY"),
          limits=limits, max_batch=args.max_batch, console=err)
    return 0


def cmd_chat(args) -> int:
    from .serving.chat import chat

    return chat(args.targets, console=out, system=args.system, compare=tuple(args.compare),
                temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftkit", description="Parameter-efficient fine-tuning from a recipe.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the recipe's adapter into a run directory")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (optional with --resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe keys, e.g. train.lr=1e-4")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its newest valid checkpoint")
    p.add_argument("--run-dir", help="run directory (default: output.dir or runs/<name>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty run directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="one self-contained HTML page: runs' curves overlaid, eval, data, choices")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (a run still training works)")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html for one run, ./report.html for several)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="local web dashboard: runs, live curves while they train, comparisons")
    p.add_argument("--runs", default="runs", help="folder of run directories (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--chat", nargs="*", default=[], metavar="RUN_DIR",
                   help="runs on one base to chat with in the page (loads the base, as peftkit serve does)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("eval", help="base vs adapter(s) vs merged on the run's held-out examples")
    p.add_argument("target", help="run directory (or a recipe: scores its base model)")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN_DIR", help="more runs on the same base")
    p.add_argument("--no-merged", action="store_true", help="skip RUN_DIR/merged even when present")
    p.add_argument("--privacy-audit", action="store_true",
                   help="instead: a loss-threshold membership attack on each run's canaries (train.canaries); "
                        "writes RUN_DIR/privacy_audit.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("merge", help="merge the adapter into the (dequantized) base; checked HF folder")
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--out", help="output folder (default RUN_DIR/merged)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="saved dtype (default: the run's model.dtype)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--no-check", action="store_true", help="skip comparing merged vs base+adapter distributions")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("export", help="adapter folder + model card, merged HF folder, or GGUF + Ollama Modelfile")
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--format", required=True, choices=("adapter", "merged", "gguf"))
    p.add_argument("--out", help="output folder (default RUN_DIR/export/...)")
    p.add_argument("--gguf-type", choices=("f16", "q8_0"), default="f16")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--no-check", action="store_true", help="skip the merge check")
    p.add_argument("--no-modelfile", action="store_true", help="GGUF only, without an Ollama Modelfile")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="train a recipe with peftkit and with the plain TRL route; compare speed, memory, loss")
    _add_recipe_args(p)
    p.add_argument("--vs", choices=("trl",), default="trl", help="peer route: TRL + PEFT + bitsandbytes "
                   "(SFTTrainer; DPOTrainer, ORPOTrainer, CPOTrainer or KTOTrainer for preference recipes)")
    p.add_argument("--repeats", type=int, default=2, help="runs per route, alternating A B A B; medians reported")
    p.add_argument("--warmup-steps", type=int, default=2, help="leading steps left out of the token rates")
    p.add_argument("--name", help="results file stem (default: the recipe name)")
    p.add_argument("--out", default="benchmarks/results", help="folder for NAME.json, NAME.md, NAME.png")
    p.add_argument("--keep-work", action="store_true", help="keep each run's log and run folder")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("plan", help="will the recipe fit a GPU? memory line by line from the base's config, no weights")
    _add_recipe_args(p)
    p.add_argument("--memory", metavar="SIZE", help="a card's memory, e.g. 12GB (GB = GiB, as cards report it): "
                   "whether it fits, and the changes that make it fit")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="where training runs (default cuda; cpu: this machine, its auto precision and RAM)")
    p.add_argument("--config", metavar="FILE", help="the base's config.json, when it is neither cached nor shipped")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--measure", action="store_true",
                   help="also load the base here and run 3 real optimizer steps on the recipe's longest examples: "
                   "measured peak memory and tokens/s beside the estimate of that batch, and their ratio")
    p.set_defaults(func=cmd_plan)

    recipes = sub.add_parser("recipes", help="check recipes and list their keys").add_subparsers(dest="sub", required=True)
    p = recipes.add_parser("validate", help="validate a recipe (and overrides) without loading a model")
    _add_recipe_args(p)
    p.add_argument("--show", action="store_true", help="print the resolved recipe")
    p.set_defaults(func=cmd_recipes_validate)
    p = recipes.add_parser("keys", help="every recipe key with its type, default and meaning")
    p.set_defaults(func=cmd_recipes_keys)

    data = sub.add_parser("data", help="see what the recipe's data becomes").add_subparsers(dest="sub", required=True)
    p = data.add_parser("preview", help="rendered examples; trained tokens highlighted ([[...]] when not a terminal)")
    _add_recipe_args(p)
    p.add_argument("-n", type=int, default=3, help="examples to show")
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument("--plain", action="store_true", help="mark trained spans with [[...]] instead of colour")
    p.set_defaults(func=cmd_data_preview)
    p = data.add_parser("stats", help="examples, tokens, trained tokens, truncation, lengths, padding waste")
    _add_recipe_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_stats)

    models = sub.add_parser("models", help="the offline model zoo").add_subparsers(dest="sub", required=True)
    p = models.add_parser("list", help="zoo aliases and whether they are pulled")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("pull", help="fetch and convert a zoo model into the cache")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    p.set_defaults(func=cmd_models_pull)

    p = sub.add_parser("chat", help="talk to a run's adapter in the terminal (its chat template); /help inside")
    p.add_argument("targets", nargs="+", metavar="RUN_DIR|MERGED_DIR|RECIPE",
                   help="a run directory (a run's merged folder; a recipe: its base alone), then more runs on the same base")
    p.add_argument("--system", help="system prompt (default: the recipe's data.system_prompt)")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="models that answer every turn beside the current one, side by side (e.g. base)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy, as eval generates")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, help="makes sampled answers repeatable")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP API: one base, one model per run's adapter")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories on the same base (a recipe: base only)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $PEFTKIT_API_KEY if set)")
    p.add_argument("--max-batch", type=int, default=16, help="requests answered in one generate call, at most")
    p.add_argument("--max-prompt-tokens", type=int, default=4096)
    p.add_argument("--max-tokens", type=int, default=1024, help="the most max_tokens a request may ask for")
    p.add_argument("--max-concurrent", type=int, default=64, help="requests in progress; more are answered 429")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("doctor", help="this machine's devices, versions, free memory and `auto` precision, for bug reports")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=cmd_doctor)
    return parser


def _quiet_libraries(interactive: bool) -> None:
    """Application-level logging choices: library notices that say nothing actionable to a peftkit user."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "no kernels package": expected, CPU path works
    warnings.filterwarnings("ignore", category=FutureWarning)
    if not interactive:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # weight-loading bars flood logs and CI output


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries(err.is_terminal)
    try:
        return args.func(args)
    except PeftkitError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
