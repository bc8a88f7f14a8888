"""One route of a bench, run in a process of its own so that its peak memory is its own:

    python -m peftkit.benchmark.routes {peftkit|trl} SPEC.json OUT.json

SPEC.json (record.write_spec) holds the resolved recipe and a work folder; OUT.json receives the RouteRun. A user
mistake (PeftkitError) ends the process with its one-line message on stderr and exit code 2. Nothing imports this
module: it is only ever run as __main__.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import PeftkitError
from ..recipe import recipe_from_dict
from .record import RouteRun

ROUTES = ("peftkit", "trl")


def _run(route: str, spec: dict) -> RouteRun:
    recipe = recipe_from_dict(spec["recipe"])
    workdir = Path(spec["workdir"]) / f"{route}-{spec['index']}"
    if route == "peftkit":
        from .peftkit_route import run_peftkit

        return run_peftkit(recipe, workdir)
    if recipe.train.objective != "sft":
        from .trl_preference import run_trl_preference

        return run_trl_preference(recipe, workdir)
    from .trl_route import run_trl

    return run_trl(recipe, workdir)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ROUTES:
        print(f"usage: python -m peftkit.benchmark.routes {{{'|'.join(ROUTES)}}} SPEC.json OUT.json", file=sys.stderr)
        return 2
    route, spec_file, out_file = argv
    try:
        result = _run(route, json.loads(Path(spec_file).read_text()))
    except PeftkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    Path(out_file).write_text(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
