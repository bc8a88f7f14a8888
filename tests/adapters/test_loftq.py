"""LoftQ on a 4-bit base: B·A absorbs the quantization error, the 4-bit base stays as load_base made it."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from support.tiny_run import write_base
from transformers import AutoModelForCausalLM

from peftkit.adapters import attach_adapter
from peftkit.errors import ModelError
from peftkit.modeling.load import load_base
from peftkit.recipe.schema import AdapterSpec, ModelSpec

QUANT = {"bits": 4, "compute_dtype": "float32"}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return write_base(tmp_path_factory.mktemp("tiny-base"))


def load4(base_dir) -> torch.nn.Module:
    return load_base(ModelSpec(base=str(base_dir), dtype="float32", quantization=QUANT)).model


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_loftq_brings_the_4bit_model_closer_to_the_original(base_dir, probe_batch, tmp_path):
    reference = logits(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), probe_batch)
    plain = attach_adapter(load4(base_dir), AdapterSpec(rank=16, dropout=0.0), task="causal_lm")
    loftq = attach_adapter(load4(base_dir), AdapterSpec(rank=16, dropout=0.0, init="loftq"), task="causal_lm")
    packed = {n: p.clone() for n, p in plain.named_parameters() if p.dtype == torch.uint8}
    # the base is the same 4-bit quantization with or without LoftQ: only A and B differ
    assert all(torch.equal(p, packed[n]) for n, p in loftq.named_parameters() if p.dtype == torch.uint8)
    error_plain = (logits(plain, probe_batch) - reference).abs().mean()
    error_loftq = (logits(loftq, probe_batch) - reference).abs().mean()
    assert error_loftq < 0.7 * error_plain, (error_loftq, error_plain)

    loftq.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(load4(base_dir), tmp_path)
    assert torch.equal(logits(reloaded, probe_batch), logits(loftq, probe_batch))


def test_loftq_without_the_base_weights_on_disk_is_a_model_error(base_dir):
    model = load4(base_dir)
    model.name_or_path = str(base_dir / "missing")
    with pytest.raises(ModelError, match="adapter.init loftq reads the un-quantized base weights"):
        attach_adapter(model, AdapterSpec(rank=4, init="loftq"), task="causal_lm")
