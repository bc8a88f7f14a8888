"""`auto` precision is a function of the hardware, injected here: never of the CPU the suite runs on."""

from __future__ import annotations

import pytest

from peftkit.errors import RecipeError
from peftkit.hardware import Gpu, Hardware, choose_precision, read_cpuinfo
from peftkit.training.choices import resolve_precision
from peftkit.recipe import load_recipe, recipe_from_dict

AVX512 = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})  # a Xeon without native bf16
SAPPHIRE = AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16"}
A100 = Gpu("NVIDIA A100", 80.0, "8.0", True)
T4 = Gpu("Tesla T4", 15.0, "7.5", False)


def auto(hw: Hardware):
    return choose_precision("auto", "auto", "auto", hw)


@pytest.mark.parametrize("flags, dtype", [
    (AVX512, "float32"),
    (frozenset({"avx2"}), "float32"),
    (frozenset(), "float32"),
    (AVX512 | {"avx512_bf16"}, "bfloat16"),
    (frozenset({"avx2", "amx_bf16"}), "bfloat16"),
    (SAPPHIRE, "bfloat16"),
])
def test_cpu_auto_is_bf16_only_with_native_bf16(flags, dtype):
    p = auto(Hardware(cpu_flags=flags))
    assert (p.model_dtype.value, p.compute_dtype.value, p.mixed_precision.value) == (dtype, dtype, "no")
    assert p.model_dtype.source == "auto" and p.model_dtype.why


@pytest.mark.parametrize("gpu, dtype, mp", [(A100, "bfloat16", "bf16"), (T4, "float16", "fp16")])
def test_cuda_auto_is_bf16_where_supported_else_fp16_with_a_scaler(gpu, dtype, mp):
    p = auto(Hardware(cpu_flags=AVX512, gpus=(gpu,)))
    assert (p.model_dtype.value, p.compute_dtype.value, p.mixed_precision.value) == (dtype, dtype, mp)
    assert gpu.name in p.mixed_precision.why


def test_an_explicit_value_wins():
    p = choose_precision("bfloat16", "float16", "no", Hardware(cpu_flags=AVX512, gpus=(A100,)))
    assert (p.model_dtype.value, p.compute_dtype.value, p.mixed_precision.value) == ("bfloat16", "float16", "no")
    assert {c.source for c in (p.model_dtype, p.compute_dtype, p.mixed_precision)} == {"recipe"}


def _raw(**model):
    return {"name": "r", "model": {"base": "x", **model}, "data": {"format": "chat", "path": "d.jsonl"}}


def test_resolve_replaces_every_auto_and_records_why():
    recipe = recipe_from_dict(_raw(quantization={"bits": 4}))
    assert (recipe.model.dtype, recipe.model.quantization.compute_dtype, recipe.train.mixed_precision) == ("auto",) * 3
    slow, p = resolve_precision(recipe, Hardware(cpu_flags=AVX512))
    assert (slow.model.dtype, slow.model.quantization.compute_dtype, slow.train.mixed_precision) == (
        "float32", "float32", "no")
    assert "AVX512-BF16" in p.summary(four_bit=True)
    fast, _ = resolve_precision(recipe, Hardware(cpu_flags=SAPPHIRE))
    assert (fast.model.dtype, fast.model.quantization.compute_dtype) == ("bfloat16", "bfloat16")


def test_rules_that_depend_on_the_dtype_see_the_resolved_value():
    # ia3 on a quantized base needs float32 layers: fine where auto picks fp32, refused where it picks bf16
    recipe = recipe_from_dict({**_raw(quantization={"bits": 8}), "adapter": {"method": "ia3"}})
    resolve_precision(recipe, Hardware(cpu_flags=AVX512))
    with pytest.raises(RecipeError, match="model.dtype"):
        resolve_precision(recipe, Hardware(cpu_flags=SAPPHIRE))


@pytest.mark.parametrize("written", ["no", "false", "off", "'no'"])
def test_a_plain_no_in_yaml_means_no_mixed_precision(tmp_path, written):
    f = tmp_path / "r.yaml"
    f.write_text(f"name: r\nmodel: {{base: x}}\ndata: {{format: chat, path: d.jsonl}}\ntrain:\n  mixed_precision: {written}\n")
    assert load_recipe(f).train.mixed_precision == "no"
    g = tmp_path / "s.yaml"
    g.write_text("name: r\nmodel: {base: x}\ndata: {format: chat, path: d.jsonl}\n")
    assert load_recipe(g, [f"train.mixed_precision={written}"]).train.mixed_precision == "no"


def test_mixed_precision_still_refuses_nonsense(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("name: r\nmodel: {base: x}\ndata: {format: chat, path: d.jsonl}\ntrain: {mixed_precision: yes}\n")
    with pytest.raises(RecipeError, match="train.mixed_precision"):
        load_recipe(f)


def test_cpuinfo_is_read_from_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f\n")
    assert read_cpuinfo(info) == ("Some Xeon", frozenset({"fpu", "avx2", "avx512f"}))
    assert read_cpuinfo(tmp_path / "missing") == ("", frozenset())
