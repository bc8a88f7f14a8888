"""`peftkit` subcommands: parse arguments, call the API, print. User mistakes exit 2 with one line."""

from __future__ import annotations

import argparse
import json
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
    from . import load_recipe, train

    recipe = load_recipe(args.recipe, args.overrides)
    result = train(recipe, run_dir=args.run_dir, force=args.force, console=err)
    ev = result.metrics["eval"]
    for label in ("before", "after"):
        if ev.get(label):
            out.print(f"{label:>6}: " + "  ".join(f"{k}={v:.4f}" for k, v in ev[label].items()), highlight=False)
    out.print(str(result.run_dir), highlight=False)
    return 0


def _bundle(args):
    from pathlib import Path

    from . import load_recipe
    from .data import build_data
    from .models.load import load_tokenizer

    recipe = load_recipe(args.recipe, args.overrides)
    tok = load_tokenizer(recipe.model)
    bundle = build_data(recipe.data, tok, base_dir=Path(args.recipe).resolve().parent, seed=recipe.train.seed,
                        task=recipe.model.task, source_file=args.recipe)
    return recipe, tok, bundle


def cmd_data_preview(args) -> int:
    from .data.preview import render_preview

    _, tok, bundle = _bundle(args)
    out.print(render_preview(bundle, tok, args.n, split=args.split, plain=args.plain or not out.is_terminal))
    return 0


def cmd_data_stats(args) -> int:
    from .data.preview import compute_stats, render_stats

    recipe, _, bundle = _bundle(args)
    tr = compute_stats(bundle, batch_size=recipe.train.batch_size)
    ev = compute_stats(bundle, batch_size=recipe.eval.batch_size or recipe.train.batch_size, split="eval")
    if args.json:
        print(json.dumps({"train": tr.to_dict(), "eval": ev.to_dict(), "report": bundle.report.to_dict()}, indent=2))
    else:
        out.print(render_stats(tr, ev))
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
    from .models.zoo import list_models

    rows = list_models()
    if args.json:
        print(json.dumps([r.__dict__ | {"path": str(r.path) if r.path else None} for r in rows], indent=2))
        return 0
    for r in rows:
        state = f"pulled: {r.path}" if r.pulled else "not pulled (peftkit models pull " + r.alias + ")"
        out.print(f"[bold]{r.alias}[/]  {escape(r.description)}  {escape('[' + state + ']')}", highlight=False)
    return 0


def cmd_models_pull(args) -> int:
    from .models.zoo import pull

    out.print(str(pull(args.name, force=args.force)), highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftkit", description="Parameter-efficient fine-tuning from a recipe.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the recipe's adapter into a run directory")
    _add_recipe_args(p)
    p.add_argument("--run-dir", help="run directory (default: output.dir or runs/<name>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty run directory")
    p.set_defaults(func=cmd_train)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
