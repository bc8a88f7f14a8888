"""LoRA, DoRA and IA3 on the real SmolLM2-135M in 4-bit: a few steps of the loop on real chat transcripts, the
4-bit base unchanged, and the saved adapter reloads with identical logits.

Kept short for CPU: two attention projections per layer (IA3: its usual k, v and down projections), 2 x 48 tokens,
and one base load shared by LoRA and DoRA (`unload()` takes the adapter layers out again; the packed 4-bit bytes
are checked before the base is reused). PEFT cannot unload IA3 from a 4-bit model, so IA3 reloads onto a fresh load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

from peftkit.adapters import attach_adapter
from peftkit.modeling.load import load_base
from peftkit.recipe.schema import AdapterSpec, ModelSpec

HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh_rlhf_helpful_base" / "test.jsonl.gz"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not HH.is_file(), reason="shared/data is not next to the project")]
# IA3's 4-bit layer hands float32 activations on, so its base keeps float32 (the recipe enforces it)
DTYPE = {"lora": "bfloat16", "dora": "bfloat16", "ia3": "float32"}
QV = ("q_proj", "v_proj")
ADAPTERS = {"lora": AdapterSpec(rank=8, dropout=0.0, targets=QV),
            "dora": AdapterSpec(method="dora", rank=8, dropout=0.0, targets=QV),
            "ia3": AdapterSpec(method="ia3", targets=("k_proj", "v_proj", "down_proj"))}
LR = {"lora": 1e-3, "dora": 1e-3, "ia3": 1e-2}


@pytest.fixture(scope="module")
def bases(smollm2_dir):
    """dtype -> (loaded base, its packed 4-bit bytes); loaded on first use, or again with fresh=True."""
    cache: dict = {}

    def get(dtype: str, fresh: bool = False):
        if dtype not in cache or fresh:
            loaded = load_base(ModelSpec(base=str(smollm2_dir), dtype=dtype, quantization={"bits": 4}))
            packed = {n: p.clone() for n, p in loaded.model.named_parameters() if p.dtype == torch.uint8}
            cache[dtype] = (loaded, packed)
        return cache[dtype]
    return get


def transcript_rows(tokenizer, n: int = 2, length: int = 48) -> list[dict]:
    """The first HH-RLHF chosen transcripts ("Human: ... Assistant: ..."), trained on every token."""
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["chosen"].strip() for _, line in zip(range(n), fh)]
    return [{"input_ids": ids, "labels": ids} for ids in (tokenizer(t)["input_ids"][:length] for t in texts)]


def unchanged(model, packed: dict[str, torch.Tensor]) -> bool:
    now = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
           for n, p in model.named_parameters() if p.dtype == torch.uint8}
    return now.keys() == packed.keys() and all(torch.equal(now[n], packed[n]) for n in packed)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_method_on_4bit_smollm2(method, bases, train_steps, tmp_path):
    loaded, packed = bases(DTYPE[method])
    rows = transcript_rows(AutoTokenizer.from_pretrained(loaded.source.path_or_id))
    adapter = ADAPTERS[method]
    model = attach_adapter(loaded.model, adapter, task="causal_lm")
    state = train_steps(model, adapter, steps=3, lr=LR[method], rows=rows, batch_size=2)
    losses = [p["loss"] for p in state.curve]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] != losses[0], losses
    assert unchanged(model, packed), "training changed the 4-bit base"

    probe = torch.tensor([rows[0]["input_ids"][:32]])
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=probe).logits
    model.save_pretrained(tmp_path)
    base = bases(DTYPE[method], fresh=True)[0].model if method == "ia3" else model.unload()
    assert unchanged(base, packed)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        got = reloaded(input_ids=probe).logits
    if method != "ia3":
        reloaded.unload()  # hand the bare base to the next method
    assert torch.equal(got, expected)
