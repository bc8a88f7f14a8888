"""The house rules that keep data flowing one way: no package imports one above it, the verbs are plain
top-level functions that no module shadows, and every caller gets its data through prepare_data."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import peftkit

ROOT = Path(peftkit.__file__).parent
# Lowest first; a package may import its own layer and those before it. README's Layout states the same order.
LAYERS = [
    {"errors"}, {"recipe"}, {"hardware", "rundir"}, {"modeling"}, {"adapters"}, {"data"}, {"evaluation"},
    {"privacy"}, {"training"}, {"reporting"}, {"planning"}, {"artifacts"}, {"benchmark"}, {"serving"}, {"dashboard"},
    {"doctor", "cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
VERBS = ("train", "evaluate", "merge", "export", "bench")


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_packages(path: Path, text: str | None = None) -> set[str]:
    """Top-level peftkit packages `path` imports, at module level or inside functions."""
    rel = path.relative_to(ROOT).parts
    found = set()
    for node in ast.walk(ast.parse(text if text is not None else path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            here = list(rel[:-1])
            base = here[: len(here) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # `from . import x` at the top of the package
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("peftkit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("peftkit."))
    return {f.removesuffix(".py") for f in found}


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    names = {_package(p) for p in _modules()}
    assert names <= set(RANK), f"place {sorted(names - set(RANK))} in LAYERS (and README's Layout)"


def test_no_package_imports_one_above_it():
    upward = []
    for path in _modules():
        own = _package(path)
        for target in _imported_packages(path):
            if target in RANK and RANK[target] > RANK[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not upward, upward


def test_the_check_itself_sees_an_upward_import():
    probe = ROOT / "data" / "probe.py"  # not written: the source is given
    for source in ("from ..training.trainer import train\n", "def f():\n    from peftkit.training import loop\n"):
        assert "training" in _imported_packages(probe, source)
    assert RANK["training"] > RANK["data"]


def test_readme_states_the_same_order():
    readme = (ROOT.parent / "README.md").read_text()
    order = " < ".join("/".join(sorted(layer)) for layer in LAYERS[:-1])
    assert order in readme, f"README's Layout should say: {order}"


def test_verbs_are_plain_functions_and_nothing_shadows_them():
    for verb in VERBS:
        assert callable(getattr(peftkit, verb)) and type(getattr(peftkit, verb)).__name__ == "function", verb
        assert not (ROOT / verb).is_dir() and not (ROOT / f"{verb}.py").exists(), f"peftkit/{verb} would shadow it"
    for pkg in ("training", "evaluation", "artifacts", "benchmark", "modeling", "data"):
        importlib.import_module(f"peftkit.{pkg}")
    assert all(type(getattr(peftkit, v)).__name__ == "function" for v in VERBS)  # still, after every import


def test_only_the_data_layer_calls_build_data():
    callers = []
    for path in _modules():
        if _package(path) == "data" and path.name != "prepare.py" and path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else (
                node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None)
            if name == "build_data" and path.name != "prepare.py":
                callers.append(str(path.relative_to(ROOT)))
    assert not callers, f"use peftkit.data.prepare.prepare_data: {callers}"
    bench = ROOT.parent / "benchmarks"
    scripts = [p.name for p in bench.glob("*.py") if "build_data(" in p.read_text()]
    assert not scripts, scripts


def test_one_ignore_index():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _modules()
            for i, line in enumerate(p.read_text().splitlines(), 1) if "-100" in line]
    assert hits == ["modeling/tokens.py:13"], hits
