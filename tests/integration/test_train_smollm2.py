"""A few real QLoRA steps on SmolLM2-135M (4-bit NF4): loss falls, and plain PEFT loads the saved adapter."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

import peftkit
from peftkit.modeling.load import load_base
from peftkit.recipe import load_recipe

pytestmark = pytest.mark.integration


def test_quickstart_trains_for_a_few_steps(smollm2_dir, tmp_path):
    recipe = load_recipe("recipes/quickstart.yaml", [
        "train.max_steps=8", "train.batch_size=4", "train.warmup_steps=0", "train.log_every=1",
        "eval.metrics=[loss]", "eval.max_examples=8", f"output.dir={tmp_path / 'run'}",
    ])
    result = peftkit.train(recipe)
    m = result.metrics
    assert m.eval.after["loss"] < m.eval.before["loss"]
    curve = [c["loss"] for c in m.train.loss_curve]
    assert min(curve[-3:]) < curve[0]
    assert 0 < result.params.trainable < result.params.total / 10

    # plain PEFT loads the saved adapter onto the same 4-bit base, and it changes the output
    base = load_base(recipe.model)
    model = PeftModel.from_pretrained(base.model, result.run_dir / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(result.run_dir / "adapter")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Extract: Ada Kim, 30, chef in Oslo."}],
                                             add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        adapted = model(**ids).logits
        with model.disable_adapter():
            plain = model(**ids).logits
    assert not torch.allclose(adapted, plain)
