"""Methods on a bitsandbytes base (a tiny Llama loaded 4-bit / 8-bit through load_base, as training does).

The pairs the recipe refuses (peftkit/recipe/schema/adapter.py: compatibility_problems) are shown to fail
inside PEFT 0.21 / bitsandbytes 0.50 here, so a library upgrade that lifts a limit makes a test fail."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from support.tiny_run import write_base

from peftkit.adapters import attach_adapter
from peftkit.errors import RecipeError
from peftkit.modeling.load import load_base
from peftkit.recipe.schema import AdapterSpec, ModelSpec
from peftkit.recipe.schema.adapter import READ_BY

LR = {"ia3": 0.1, "vera": 0.1, "prompt_tuning": 0.1}
# These hand float32 activations to the next layer on a bnb base, so the recipe asks for a float32 model dtype.
DTYPE = {(4, "ia3"): "float32", (8, "ia3"): "float32", (8, "adalora"): "float32"}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return write_base(tmp_path_factory.mktemp("tiny-base"))


def load(base_dir, bits: int, dtype: str = "bfloat16") -> torch.nn.Module:
    """As training loads it on a bf16 machine: bf16 un-quantized layers, 4-bit compute in bf16. Written out, not
    left at `auto`, which picks float32 on a CPU without AVX512-BF16/AMX and would change what these tests show."""
    quantization = {"bits": bits, "compute_dtype": "bfloat16"} if bits == 4 else {"bits": bits}
    return load_base(ModelSpec(base=str(base_dir), dtype=dtype, quantization=quantization)).model


def spec(method: str, **options) -> AdapterSpec:
    small = {"rank": 4} if method in READ_BY["rank"] else {}
    no_dropout = {"dropout": 0.0} if method in READ_BY["dropout"] else {}
    return AdapterSpec(method=method, **{**small, **no_dropout, **options})


def quantized_bytes(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype in (torch.uint8, torch.int8)}


@pytest.mark.parametrize(("bits", "method", "options"), [
    (4, "lora", {}), (4, "dora", {}), (4, "ia3", {}), (4, "vera", {"rank": 32}), (8, "adalora", {}),
    (4, "oft", {"block_size": 16}), (4, "prompt_tuning", {"num_virtual_tokens": 4}), (4, "lora", {"init": "olora"}),
    (4, "boft", {"block_size": 16}), (4, "prefix_tuning", {"num_virtual_tokens": 4}),
    (8, "lora", {}), (8, "loha", {}), (8, "lokr", {}), (8, "ia3", {}), (8, "vera", {"rank": 32}),
    (8, "oft", {"block_size": 16}),
])
def test_method_trains_on_a_quantized_base_and_reloads(bits, method, options, base_dir, train_steps, probe_batch,
                                                       tmp_path):
    adapter = spec(method, **options)
    dtype = DTYPE.get((bits, method), "bfloat16")
    model = attach_adapter(load(base_dir, bits, dtype), adapter, task="causal_lm", total_steps=4)
    packed = quantized_bytes(model)
    assert packed, "nothing was quantized"
    state = train_steps(model, adapter, steps=4, lr=LR.get(method, 1e-2))
    losses = [p["loss"] for p in state.curve]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0], losses
    after = quantized_bytes(model)
    assert all(torch.equal(after[n], packed[n]) for n in packed), "training changed the quantized base"

    model.eval()
    with torch.no_grad():
        expected = model(**probe_batch).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(load(base_dir, bits, dtype), tmp_path).eval()
    with torch.no_grad():
        got = reloaded(**probe_batch).logits
    if method == "adalora":  # the saved adapter keeps only the live ranks: same values, smaller matmuls
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize(("bits", "method", "options", "error"), [
    (4, "loha", {}, "shapes cannot be multiplied"),  # LoHa / LoKr read the packed 4-bit weight's shape
    (4, "lokr", {}, "is invalid for input of size"),
    (8, "dora", {}, "'NoneType' object has no attribute"),  # the int8 scales are gone after the first step
    (4, "lora", {"init": "pissa"}, "Please initialize PiSSA under float32"),
    (8, "lora", {"init": "pissa"}, "Please initialize PiSSA under float32"),
    (4, "ia3", {}, "expected m1 and m2 to have the same dtype"),  # on the bf16 base (load()'s default)
    (8, "ia3", {}, "expected m1 and m2 to have the same dtype"),
    (8, "adalora", {}, "expected m1 and m2 to have the same dtype"),
])
def test_pairs_the_recipe_refuses_do_fail_in_peft(bits, method, options, error, base_dir, train_steps):
    """Each raises inside PEFT / bitsandbytes (attach, or a training step: 8-bit DoRA fails on the second), which
    is why validation refuses it before a run starts."""
    adapter = spec(method, **options)
    with pytest.raises((RuntimeError, AttributeError, RecipeError), match=error):
        train_steps(attach_adapter(load(base_dir, bits), adapter, task="causal_lm", total_steps=2), adapter, steps=2)
