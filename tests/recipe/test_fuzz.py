"""Property-based robustness of the recipe loader: whatever a user writes (mutated recipes, random overrides,
garbage YAML), `load_recipe` returns a Recipe or raises a one-line PeftkitError naming the key; never another
exception type, never a multi-line message, never code run from a YAML tag."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from peftkit.errors import PeftkitError, RecipeError
from peftkit.recipe import Recipe, load_recipe
from peftkit.recipe.schema.data import MixSource

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_TEXT = (ROOT / "recipes" / "quickstart.yaml").read_text()

MINIMAL = {"name": "t", "model": {"base": "smollm2-135m-instruct"},
           "data": {"format": "chat", "path": "builtin:person-extraction"}}
# Every section set, a mix list and relative paths; no key here depends on another one being present.
FULL = {
    "name": "full", "description": "every section",
    "model": {"base": "smollm2-135m-instruct", "dtype": "float32",
              "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"}},
    "adapter": {"rank": 8, "alpha": 16.0, "dropout": 0.1, "targets": ["q_proj", "v_proj"]},
    "data": {"format": "alpaca", "path": "train.jsonl", "eval_path": "eval.jsonl", "max_length": 128,
             "columns": {"output": "answer"}, "on_bad_row": "skip",
             "mix": [{"path": "more.jsonl", "limit": 10}, {"path": "extra.jsonl"}]},
    "train": {"max_steps": 5, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2,
              "keep_checkpoints": 1, "max_grad_norm": 0.5},
    "eval": {"metrics": ["loss", "exact_match"], "max_examples": 4, "max_new_tokens": 8},
    "output": {"dir": "out/run", "overwrite": False},
}
BASES = {"minimal": MINIMAL, "quickstart": yaml.safe_load(QUICKSTART_TEXT), "full": FULL}
REQUIRED = {("name",), ("model",), ("model", "base"), ("data",), ("data", "format"), ("data", "path"),
            ("data", "mix", 0, "path"), ("data", "mix", 1, "path")}

# ---- the schema, walked: which dotted paths are sections, and which take numbers with what bounds


def _section(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((s for s in map(_section, typing.get_args(annotation)) if s is not None), None)


def _sections(model: type[BaseModel] = Recipe, prefix: tuple = ()) -> dict[tuple, type[BaseModel]]:
    out = {prefix: model}
    for name, field in model.model_fields.items():
        sub = _section(field.annotation)
        if sub is not None and typing.get_origin(field.annotation) is not tuple:  # data.mix is a list, not here
            out.update(_sections(sub, (*prefix, name)))
    return out


SECTIONS = _sections()
NUMERIC = {  # dotted path -> (int or float, [constraints])
    (*prefix, name): (int if int in typing.get_args(f.annotation) or f.annotation is int else float, f.metadata)
    for prefix, model in SECTIONS.items() for name, f in model.model_fields.items()
    if f.annotation in (int, float) or set(typing.get_args(f.annotation)) in ({int, type(None)}, {float, type(None)})
}


def in_bounds(value, kind: type, constraints: list) -> bool:
    """What the schema should accept: a finite number of the right kind inside every bound."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if kind is int and isinstance(value, float) and not value.is_integer():
        return False
    if kind is float and isinstance(value, int) and abs(value) > 1e308:
        return False  # becomes inf
    checks = {at.Ge: lambda c: value >= c.ge, at.Gt: lambda c: value > c.gt,
              at.Le: lambda c: value <= c.le, at.Lt: lambda c: value < c.lt}
    return all(checks[type(c)](c) for c in constraints if type(c) in checks)


# ---- helpers


def dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def shown(text: str) -> str:
    """How the loader prints a key the user typed (control characters escaped, so errors stay one line)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def get(d, path):
    for p in path:
        d = d[p]
    return d


def put(d, path, value):
    for p in path[:-1]:
        d = d[p] if isinstance(d, list) else d.setdefault(p, {})
    d[path[-1]] = value


def leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("columns", "roles"):
            yield from leaves(v, (*prefix, k))
        elif k == "mix":
            for i, item in enumerate(v):
                yield from leaves(item, (*prefix, k, i))
        else:
            yield (*prefix, k)


def keys(d, prefix=()):
    """Every key path (sections and leaves)."""
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict) and k not in ("columns", "roles"):
            yield from keys(v, (*prefix, k))
        elif k == "mix":
            for i, item in enumerate(v):
                yield from keys(item, (*prefix, k, i))


def deep_copy(d):
    return yaml.safe_load(yaml.safe_dump(d))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load(path: Path, overrides=()) -> Recipe | RecipeError | PeftkitError:
    """The property every case shares: a Recipe, or a PeftkitError with a one-line message. Anything else
    (ValueError, RecursionError, OSError, ...) propagates and fails the test."""
    try:
        return load_recipe(path, overrides)
    except PeftkitError as exc:
        message = str(exc)
        assert message.strip() and len(message.splitlines()) == 1, repr(message)
        return exc


def load_dict(work: Path, raw: dict, overrides=(), *, exact_yaml: bool = True):
    text = yaml.safe_dump(raw, sort_keys=False)
    if exact_yaml:  # e.g. a '<<' key is a YAML merge, not a key: such draws test something else
        assume(yaml.safe_dump(yaml.safe_load(text), sort_keys=False) == text)
    f = work / "recipe.yaml"
    f.write_text(text, encoding="utf-8")
    return load(f, overrides)


def named(result, path: tuple, *, exact: bool = True) -> str:
    """The problem key that names `path` (exactly, or a key inside it, or the section holding it for a rule
    across fields); asserts the one-line message contains it."""
    assert isinstance(result, RecipeError), f"expected a RecipeError naming {dotted(path)}, got {result!r}"
    want = dotted(path)
    keys_ = [p.key for p in result.problems]
    hits = [k for k in keys_ if k == want or k.startswith(want + ".") or (not exact and want.startswith(k + "."))]
    assert hits, f"{want} not among {keys_}"
    assert hits[0] in str(result)
    return hits[0]


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**40), 10**40), st.floats(allow_nan=True), texts)
garbage = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
                       max_leaves=6)
base_names = st.sampled_from(sorted(BASES))

# ---- mutated recipes


def test_bases_are_valid(work):
    for raw in BASES.values():
        assert isinstance(load_dict(work, raw, exact_yaml=False), Recipe)


@FUZZ
@given(base=base_names, data=st.data(), value=garbage)
def test_leaf_replaced_by_any_value(work, base, data, value):
    raw = deep_copy(BASES[base])
    path = data.draw(st.sampled_from(list(leaves(raw))), label="path")
    was_mapping = isinstance(get(raw, path), dict)  # data.columns: a mapping field
    put(raw, path, value)
    result = load_dict(work, raw)
    if isinstance(value, dict) and not was_mapping:  # a mapping where a plain value goes is always wrong
        named(result, path)
    elif not isinstance(result, Recipe):
        named(result, path, exact=False)


@FUZZ
@given(base=base_names, data=st.data(),
       key=st.one_of(texts.filter(bool), st.integers(-5, 5).filter(lambda i: i not in (0, 1))))
def test_unknown_key_at_any_depth_is_named(work, base, data, key):
    raw = deep_copy(BASES[base])
    places = [*SECTIONS, *(("data", "mix", i) for i in range(len(raw["data"].get("mix", []))))]
    section = data.draw(st.sampled_from(places), label="section")
    model = MixSource if section[:2] == ("data", "mix") else SECTIONS[section]
    assume(key not in model.model_fields)
    node = raw
    for part in section:  # a section the base leaves out is added empty (all defaults)
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[key] = data.draw(garbage, label="value")
    result = load_dict(work, raw)
    named(result, (*section, shown(str(key))))
    if isinstance(key, str):
        assert any(p.message.startswith("unknown key") for p in result.problems)


@FUZZ
@given(base=base_names, data=st.data())
def test_deleting_a_key_fails_only_for_required_ones(work, base, data):
    raw = deep_copy(BASES[base])
    path = data.draw(st.sampled_from(list(keys(raw))), label="path")
    del get(raw, path[:-1])[path[-1]]
    result = load_dict(work, raw)
    if path in REQUIRED:
        assert named(result, path) == dotted(path)
        assert "required key is missing" in str(result)
    else:
        assert isinstance(result, Recipe), result


specials = st.sampled_from([0, -1, 1, 2, 8, 4096, 4097, -(10**6), 10**30, 10**400, 0.5, 0.999, 1.0, 1.5, -0.0,
                            1e-12, 1e308, float("inf"), float("-inf"), float("nan")])


@FUZZ
@given(base=base_names, path=st.sampled_from(sorted(NUMERIC, key=dotted)),
       value=st.one_of(specials, st.integers(-(10**9), 10**9), st.floats(allow_nan=True)))
def test_numbers_out_of_range_are_refused_by_key(work, base, path, value):
    kind, constraints = NUMERIC[path]
    raw = deep_copy(BASES[base])
    put(raw, path, value)
    result = load_dict(work, raw)
    if in_bounds(value, kind, constraints):
        # a value inside its own bounds may still break a rule across fields (warmup vs max_steps, ...)
        assert isinstance(result, Recipe) or named(result, path, exact=False)
    else:
        assert named(result, path) == dotted(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_every_number_refuses_nan_and_inf(work, value):
    raw = deep_copy(FULL)
    for path in NUMERIC:
        put(raw, path, value)
    result = load_dict(work, raw, exact_yaml=False)
    for path in NUMERIC:
        assert named(result, path) == dotted(path)


@FUZZ
@given(base=base_names, data=st.data(),
       junk=st.one_of(st.lists(scalars, max_size=3), st.integers(), texts.filter(lambda t: t.lower() not in (
           "none", "null", "~", "")), st.booleans(), st.floats(allow_nan=True)))
def test_section_replaced_by_garbage_is_named(work, base, data, junk):
    raw = deep_copy(BASES[base])
    path = data.draw(st.sampled_from([p for p in SECTIONS if p]), label="section")
    put(raw, path, junk)
    assert named(load_dict(work, raw), path) == dotted(path)


@FUZZ
@given(data=st.data())
def test_missing_sections_are_named(work, data):
    raw = deep_copy(FULL)
    gone = data.draw(st.lists(st.sampled_from(sorted(k for k in raw if k != "name")), min_size=1, unique=True))
    for key in gone:
        del raw[key]
    result = load_dict(work, raw)
    for key in gone:
        if (key,) in REQUIRED:
            assert named(result, (key,)) == key


# ---- overrides


override_keys = st.one_of(
    st.sampled_from([dotted(p) for p in NUMERIC] + ["name", "data.path", "adapter.targets", "model.quantization",
                                                     "eval.metrics", "data.format", "train.schedule"]),
    texts,
)
override_values = st.one_of(
    texts, st.sampled_from(["", "null", "~", "[", "{a: 1", "[1, 2]", "{x: y}", ".nan", "-.inf", "1e999", "9" * 5000,
                            "!!python/object/apply:os.system [true]", "&a [*a]", "'", "\t", "=", "a=b"]),
)


@FUZZ
@given(base=base_names, pairs=st.lists(st.tuples(override_keys, override_values), max_size=4),
       raw_items=st.lists(texts, max_size=2))
def test_random_overrides(work, base, pairs, raw_items):
    items = [f"{k}={v}" for k, v in pairs] + raw_items
    result = load_dict(work, deep_copy(BASES[base]), items)
    if isinstance(result, Recipe):
        return
    assert isinstance(result, RecipeError), result
    for item in raw_items:
        key = item.partition("=")[0]
        if "=" not in item or not key.strip():
            assert shown(item) in [p.key for p in result.problems]


@FUZZ
@given(base=base_names, data=st.data(),
       field=st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True), value=override_values)
def test_unknown_override_key_is_named(work, base, data, field, value):
    section = data.draw(st.sampled_from(list(SECTIONS)), label="section")
    assume(field not in SECTIONS[section].model_fields)
    item = f"{dotted((*section, field))}={value}"
    assert named(load_dict(work, deep_copy(BASES[base]), [item]), (*section, field))


# ---- YAML text and bytes


@FUZZ
@given(text=st.text(max_size=300))
def test_random_yaml_text(work, text):
    f = work / "text.yaml"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    load(f)


@FUZZ
@given(blob=st.binary(max_size=300))
def test_random_bytes(work, blob):
    f = work / "bytes.yaml"
    f.write_bytes(blob)
    load(f)


@FUZZ
@given(data=st.data())
def test_quickstart_text_with_random_edits(work, data):
    text = QUICKSTART_TEXT
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at_ = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 3), label="cut")
        insert = data.draw(st.sampled_from(["", "\t", " ", ":", "-", "[", "]", "{", "&a ", "*a", "!!", "'", '"',
                                            "\n", "#", "%", "@", "\x00", "\ufeff", "é", "<<: *a\n"]), label="insert")
        text = text[:at_] + insert + text[at_ + cut:]
    f = work / "edited.yaml"
    f.write_text(text, encoding="utf-8")
    load(f)


NASTY = {
    "tab indent": "name: t\nmodel:\n\tbase: x\n",
    "python object": "!!python/object/apply:builtins.open ['{marker}', 'w']\n",
    "python object in a key": "name: t\nmodel: {{base: !!python/object/apply:builtins.open ['{marker}', 'w']}}\n",
    "python name": "name: !!python/name:os.system\n",
    "self-referencing alias": "name: t\nmodel: &m {{base: x, more: *m}}\ndata: {{format: chat, path: builtin:x}}\n",
    "undefined alias": "name: *nowhere\n",
    "merge of a scalar": "name: t\nmodel: {{<<: 5}}\n",
    "unhashable key": "? [a, b]\n: 1\n",
    "deep nesting": "name: " + "[" * 3000 + "]" * 3000 + "\n",
    "nested too deep for the schema": "name: t\ndescription: " + "[" * 60 + "]" * 60 + "\n",
    "huge integer": "name: t\ntrain: {{max_steps: " + "9" * 5000 + "}}\n",
    "impossible date": "name: 2024-02-30\n",
    "top level list": "- name: t\n",
    "top level scalar": "just text\n",
    "empty": "",
    "only a comment": "# nothing\n",
    "two documents": "name: a\n---\nname: b\n",
    "NUL byte": "name: t\x00\n",
    "BOM then recipe": "\ufeffname: t\n",
    "newline in a key": 'name: t\nmodel: {{base: x, "a\\nb\\u2028c": 1}}\ndata: {{format: chat, path: builtin:x}}\n',
}


@pytest.mark.parametrize("case", sorted(NASTY))
def test_nasty_yaml(work, case):
    marker = work / f"marker-{case.replace(' ', '-')}"
    f = work / "nasty.yaml"
    f.write_text(NASTY[case].format(marker=marker), encoding="utf-8")
    result = load(f)
    assert not marker.exists(), "a YAML tag ran code: the loader is not safe"
    assert isinstance(result, PeftkitError)
    if case.startswith("python"):
        assert "not valid YAML" in str(result) and "python" in str(result)
    if case == "newline in a key":
        assert named(result, ("model", "a\\nb\\u2028c"))


def test_billion_laughs_is_refused_quickly(work):
    """Aliases make a 1 kB file stand for 9^12 strings: reported, not expanded (no hang, bounded message)."""
    lines = ["name: t", "model: {base: x}", "data: {format: chat, path: builtin:x}", "x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 13)]
    f = work / "laughs.yaml"
    f.write_text("\n".join([*lines, "description: *x12"]) + "\n")
    result = load(f)
    assert isinstance(result, RecipeError) and len(str(result)) < 10_000
    named(result, ("description",))


# ---- paths resolve against the recipe's folder


@FUZZ
@given(name=st.from_regex(r"[A-Za-z0-9_-]{1,12}(/[A-Za-z0-9_-]{1,8})?\.(jsonl|csv|json)", fullmatch=True))
def test_relative_paths_resolve_against_the_recipe_folder(work, name):
    raw = deep_copy(FULL)
    raw["data"]["path"], raw["data"]["eval_path"], raw["data"]["mix"][0]["path"] = name, "./" + name, name
    sub = work / "nested" / "deeper"
    sub.mkdir(parents=True, exist_ok=True)
    f = sub / "r.yaml"
    f.write_text(yaml.safe_dump(raw))
    r = load_recipe(f)
    want = str((sub / name).resolve())
    assert r.data.path == want and r.data.eval_path == want and r.data.mix[0].path == want


def test_unusable_path_strings_are_refused_or_left_for_the_data_layer(work):
    raw = deep_copy(MINIMAL)
    raw["data"]["path"] = "a\x00b.jsonl"
    result = load_dict(work, raw, exact_yaml=False)
    assert named(result, ("data", "path")) == "data.path" and "NUL" in str(result)
    raw["data"]["path"] = "x" * 5000 + ".jsonl"  # too long a name for the OS: kept as written, no OSError here
    assert load_dict(work, raw, exact_yaml=False).data.path == raw["data"]["path"]
