"""Recipe loading: YAML, overrides, validation errors that name the file, key and value."""

from pathlib import Path

import pytest
import yaml

from peftkit.errors import PeftkitError, RecipeError
from peftkit.recipe import load_recipe, parse_override, recipe_from_dict, recipe_to_yaml

MINIMAL = {
    "name": "t",
    "model": {"base": "smollm2-135m-instruct"},
    "data": {"format": "chat", "path": "builtin:person-extraction"},
}


def write(tmp_path: Path, data, name="r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def problems(exc: RecipeError) -> dict[str, str]:
    return {p.key: p.message for p in exc.problems}


def test_minimal_recipe_fills_defaults(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL))
    assert r.adapter.method == "lora" and r.adapter.rank == 16
    assert r.model.quantization.bits is None
    assert r.train.max_steps == 100


def test_sections_are_frozen(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(Exception):
        r.train.lr = 1.0  # type: ignore[misc]


def test_overrides_set_nested_keys_with_yaml_types(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL), ["train.max_steps=40", "adapter.rank=8", "train.lr=1e-4",
                                               "model.quantization.bits=4", "adapter.targets=[q_proj, v_proj]"])
    assert r.train.max_steps == 40 and r.adapter.rank == 8 and r.train.lr == 1e-4
    assert r.model.quantization.bits == 4
    assert r.adapter.targets == ("q_proj", "v_proj")


@pytest.mark.parametrize("value", ["none", "null", "~"])
def test_quantization_none_spellings(tmp_path, value):
    r = load_recipe(write(tmp_path, MINIMAL), [f"model.quantization={value}"])
    assert r.model.quantization.bits is None


def test_every_problem_reported_at_once_with_file_key_value_and_suggestion(tmp_path):
    bad = {**MINIMAL, "adapter": {"rnak": 8, "dropout": 2.0}, "train": {"lr": -1, "batch_size": "big"}}
    bad["model"] = {"base": "x", "quantization": {"bits": 3}}
    f = write(tmp_path, bad)
    with pytest.raises(RecipeError) as info:
        load_recipe(f, ["train.max_step=5"])
    got = problems(info.value)
    assert set(got) == {"adapter.rnak", "adapter.dropout", "train.lr", "train.batch_size", "model.quantization.bits",
                        "train.max_step"}
    assert "did you mean adapter.rank?" in got["adapter.rnak"]
    assert "did you mean train.max_steps?" in got["train.max_step"]
    text = str(info.value)
    assert text.startswith(str(f)) and "\n" not in text
    assert "(got -1)" in text and "(got 'big')" in text and "(got 3)" in text


def test_unknown_section_lists_valid_ones(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, {**MINIMAL, "optimiser": {"lr": 1}}))
    assert "optimiser" in problems(info.value)
    assert "valid keys" in problems(info.value)["optimiser"] or "did you mean" in problems(info.value)["optimiser"]


def test_missing_required_keys(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, {"name": "t", "data": {"format": "chat"}}))
    got = problems(info.value)
    assert got["model"] == "required key is missing"
    assert got["data.path"].startswith("required key is missing")  # ... or a hub dataset in data.hub


def test_cross_field_rule_names_its_section(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, {**MINIMAL, "data": {"format": "chat", "path": "x.jsonl", "eval_fraction": 0}}))
    assert "eval_path or eval_fraction" in problems(info.value)["data"]
    assert "(got" not in str(info.value)


def test_bad_name_is_refused(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, {**MINIMAL, "name": "../escape"}))
    assert "name" in problems(info.value)


def test_override_into_a_value_is_an_error(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL), ["model.base.x=1"])
    assert "model.base" in problems(info.value)


def test_malformed_override():
    with pytest.raises(ValueError):
        parse_override("train.lr")


def test_override_without_equals_is_reported(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL), ["train.lr"])
    assert "train.lr" in problems(info.value)


def test_missing_file_and_garbage_yaml(tmp_path):
    with pytest.raises(PeftkitError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(PeftkitError, match=r"not valid YAML at line 2"):
        load_recipe(write(tmp_path, "name: t\nmodel: {base: [x}\n"))
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))


def test_relative_data_paths_resolve_against_recipe_folder(tmp_path):
    sub = tmp_path / "recipes"
    sub.mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    r = load_recipe(write(sub, {**MINIMAL, "data": {"format": "chat", "path": "../data.jsonl"}}))
    assert Path(r.data.path) == (tmp_path / "data.jsonl").resolve()


def test_hub_dataset_id_is_left_alone(tmp_path):
    r = load_recipe(write(tmp_path, {**MINIMAL, "data": {"format": "chat", "path": "org/dataset"}}))
    assert r.data.path == "org/dataset"


def test_resolved_recipe_round_trips():
    r = recipe_from_dict(MINIMAL)
    again = recipe_from_dict(yaml.safe_load(recipe_to_yaml(r)))
    assert again == r
