"""attach_adapter: fp32 adapter weights on any base, and settings PEFT would silently change are refused by key."""

from __future__ import annotations

import pytest
import torch

from peftkit.adapters import attach_adapter, peft_config
from peftkit.errors import RecipeError
from peftkit.recipe.schema import AdapterSpec


def test_lora_weights_are_fp32_on_a_bf16_base(tiny_llama):
    model = attach_adapter(tiny_llama(torch.bfloat16), AdapterSpec(rank=4), task="causal_lm")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)


@pytest.mark.parametrize("method", ["oft", "boft"])
def test_block_size_that_does_not_divide_a_width_is_refused(method, tiny_llama):
    with pytest.raises(RecipeError) as info:
        attach_adapter(tiny_llama(), AdapterSpec(method=method, block_size=48), task="causal_lm")
    (problem,) = info.value.problems
    assert problem.key == "adapter.block_size" and problem.value == 48
    assert "(64, 128)" in problem.message and "32, 64" in problem.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback is what is refused")
def test_boft_butterflies_are_refused_on_cpu(tiny_llama):
    with pytest.raises(RecipeError, match="adapter.butterfly_factor: BOFT butterflies need CUDA"):
        attach_adapter(tiny_llama(), AdapterSpec(method="boft", block_size=16, butterfly_factor=2), task="causal_lm")


def test_adalora_takes_its_schedule_from_total_steps(tiny_llama):
    spec = AdapterSpec(method="adalora", rank=4, adalora_tinit=2, adalora_tfinal=3)
    config = peft_config(spec, tiny_llama(), task="causal_lm", total_steps=20)
    assert (config.total_step, config.target_r, config.init_r, config.tinit, config.tfinal) == (20, 4, 6, 2, 3)
    with pytest.raises(ValueError, match="total_steps"):
        peft_config(spec, tiny_llama(), task="causal_lm")


def test_method_options_reach_peft(tiny_llama):
    model = tiny_llama()
    lora = peft_config(AdapterSpec(method="rslora", rank=8, alpha=4, dropout=0.1, init="gaussian", layers=(0,)),
                       model, task="causal_lm")
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora, lora.use_dora) == (8, 4, 0.1, True, False)
    assert lora.init_lora_weights == "gaussian" and all(".layers.0." in t for t in lora.target_modules)
    assert peft_config(AdapterSpec(method="dora"), model, task="causal_lm").use_dora
    ia3 = peft_config(AdapterSpec(method="ia3", targets="mlp"), model, task="causal_lm")
    assert set(ia3.feedforward_modules) == {t for t in ia3.target_modules if t.endswith("down_proj")}
    prompt = peft_config(AdapterSpec(method="prompt_tuning", num_virtual_tokens=7, modules_to_save=("lm_head",)),
                         model, task="sequence_classification")
    assert prompt.num_virtual_tokens == 7 and prompt.task_type == "SEQ_CLS" and prompt.modules_to_save == ["lm_head"]
    boft = peft_config(AdapterSpec(method="boft", block_size=16, butterfly_factor=2), model, task="causal_lm")
    assert (boft.boft_block_size, boft.boft_n_butterfly_factor) == (16, 2)


def test_modules_to_save_trains_the_head_in_full(tiny_llama):
    model = attach_adapter(tiny_llama(), AdapterSpec(method="ia3", modules_to_save=("lm_head",)), task="causal_lm")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lm_head.modules_to_save" in n for n in names) and any("ia3_l" in n for n in names)
