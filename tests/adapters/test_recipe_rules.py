"""The adapter and quantization keys of a recipe: every method loads, options a method does not read are refused
by key, and method x quantization pairs PEFT / bitsandbytes cannot run are refused with what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftkit.errors import RecipeError
from peftkit.recipe import load_recipe, recipe_from_dict, recipe_to_yaml
from peftkit.recipe.schema.adapter import ALL_METHODS

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
MINIMAL = {"name": "t", "model": {"base": "smollm2-135m-instruct"},
           "data": {"format": "chat", "path": "builtin:person-extraction"}}


def problems(overrides: list[str], raw: dict = MINIMAL) -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw, overrides=overrides)
    return {p.key: p.message for p in info.value.problems}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_loads_from_the_quickstart_and_round_trips(method, tmp_path):
    # the quickstart's base is 4-bit with bf16 layers; LoHa / LoKr cannot wrap 4-bit layers and IA3 needs fp32
    # layers around them (both refused below): they change the load
    bits = {"loha": ["model.quantization.bits=8"], "lokr": ["model.quantization.bits=8"],
            "ia3": ["model.dtype=float32"],
            "adalora": ["model.quantization.bits=8", "model.dtype=float32"]}.get(method, [])
    recipe = load_recipe(QUICKSTART, [f"adapter.method={method}", *bits])
    assert recipe.adapter.method == method
    resolved = tmp_path / "recipe.yaml"  # every key written out, defaults included, loads again
    resolved.write_text(recipe_to_yaml(recipe))
    assert load_recipe(resolved) == recipe


@pytest.mark.parametrize(("method", "key", "value"), [
    ("ia3", "rank", 8),
    ("ia3", "dropout", 0.1),
    ("vera", "alpha", 8),
    ("lora", "num_virtual_tokens", 8),
    ("lora", "block_size", 16),
    ("oft", "butterfly_factor", 2),
    ("dora", "adalora_tinit", 2),
    ("loha", "init", "pissa"),
    ("ia3", "lora_plus_ratio", 16),
    ("prompt_tuning", "targets", "[q_proj]"),
    ("prefix_tuning", "layers", "[0]"),
])
def test_an_option_the_method_does_not_read_is_refused_by_key(method, key, value):
    got = problems([f"adapter.method={method}", f"adapter.{key}={value}"])
    assert set(got) == {f"adapter.{key}"}
    assert got[f"adapter.{key}"].startswith("only for method ") and f"not {method}" in got[f"adapter.{key}"]


def test_options_at_their_defaults_or_off_are_accepted_by_any_method():
    recipe = recipe_from_dict(MINIMAL, overrides=["adapter.method=prompt_tuning", "adapter.rank=16",
                                                  "adapter.dropout=0", "adapter.targets=all-linear"])
    assert recipe.adapter.method == "prompt_tuning"


@pytest.mark.parametrize(("overrides", "key", "hint"), [
    (["model.quantization.bits=4", "adapter.method=loha"], "adapter.method", "model.quantization.bits to 8 or null"),
    (["model.quantization.bits=4", "adapter.method=lokr"], "adapter.method", "model.quantization.bits to 8 or null"),
    (["model.quantization.bits=8", "adapter.method=dora"], "adapter.method", "model.quantization.bits to 4 or null"),
    (["model.quantization.bits=8", "adapter.init=pissa"], "adapter.init", "init olora"),
    (["model.quantization.bits=4", "adapter.init=pissa"], "adapter.init", "model.quantization.bits to null"),
    (["model.quantization.bits=4", "adapter.init=pissa"], "adapter.init", "or use init loftq"),
    (["adapter.init=loftq"], "adapter.init", "model.quantization.bits to 4"),
    (["model.quantization.bits=8", "adapter.init=loftq"], "adapter.init", "model.quantization.bits to 4"),
    (["model.quantization.bits=4", "model.dtype=bfloat16", "adapter.method=ia3"], "adapter.method",
     "model.dtype to float32"),
    (["model.quantization.bits=8", "model.dtype=float16", "adapter.method=adalora"], "adapter.method",
     "model.dtype to float32"),
    (["adapter.method=prompt_tuning", "data.packing=true"], "adapter.method", "data.packing to false"),
    (["model.quantization.bits=4", "adapter.method=adalora"], "adapter.method", "does not reload exactly"),
    (["adapter.method=adalora", "adapter.adalora_tinit=60", "adapter.adalora_tfinal=40"], "adapter.adalora_tinit",
     "train.max_steps (100)"),
])
def test_pairs_that_cannot_run_are_refused_saying_what_to_change(overrides, key, hint):
    got = problems(overrides)
    assert key in got and hint in got[key], got


@pytest.mark.parametrize("overrides", [
    ["model.quantization.bits=8", "adapter.method=loha"],
    ["model.quantization.bits=4", "adapter.method=dora"],
    ["model.quantization.bits=4", "adapter.init=loftq"],
    ["model.quantization.bits=4", "adapter.init=olora"],
    ["model.quantization.bits=8", "adapter.method=ia3", "model.dtype=float32"],
    ["adapter.method=ia3"],
    ["adapter.method=prefix_tuning", "data.packing=false"],
    ["adapter.method=adalora", "adapter.adalora_tinit=10", "adapter.adalora_tfinal=10"],
])
def test_pairs_that_run_are_accepted(overrides):
    recipe_from_dict(MINIMAL, overrides=overrides)


def test_loftq_needs_plain_lora_and_adalora_prunes_downwards():
    got = problems(["model.quantization.bits=4", "adapter.method=dora", "adapter.init=loftq",
                    "adapter.method=adalora", "adapter.rank=8", "adapter.adalora_init_rank=4"])
    assert "adapter.adalora_init_rank" in got and ">= rank" in got["adapter.adalora_init_rank"]
    got = problems(["model.quantization.bits=4", "adapter.method=dora", "adapter.init=loftq"])
    assert got == {"adapter.init": "loftq applies to method lora or rslora, not dora"}


@pytest.mark.parametrize(("overrides", "words"), [
    (["model.quantization.bits=8", "model.quantization.quant_type=fp4"], "quant_type only apply to bits 4"),
    (["model.quantization.compute_dtype=float32"], "compute_dtype only apply to bits 4"),
    (["model.quantization.double_quant=false"], "double_quant only apply to bits 4"),
    (["model.quantization.skip_modules=[lm_head]"], "skip_modules only applies with bits 4 or 8"),
])
def test_quantization_options_need_their_bits(overrides, words):
    got = problems(overrides)
    assert words in got["model.quantization"]


def test_quantization_menu_is_accepted():
    for overrides in (["model.quantization.bits=4", "model.quantization.quant_type=fp4",
                       "model.quantization.double_quant=false", "model.quantization.compute_dtype=float32",
                       "model.quantization.skip_modules=[lm_head]"],
                      ["model.quantization.bits=8", "model.quantization.skip_modules=[lm_head]"],
                      ["model.quantization=none", "model.dtype=float32"]):
        recipe_from_dict(MINIMAL, overrides=overrides)


def test_quickstart_command_line_error_is_one_line_naming_file_and_key():
    with pytest.raises(RecipeError) as info:
        load_recipe(QUICKSTART, ["adapter.method=loha"])
    message = str(info.value)
    assert message.startswith(f"{QUICKSTART}: adapter.method: loha cannot wrap 4-bit") and "\n" not in message
