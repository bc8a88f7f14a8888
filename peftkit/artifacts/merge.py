"""Merge a run's adapter into un-quantized base weights and save a plain HF model folder.

Which base weights? A LoRA trained on a 4-bit base learned to correct the *quantized* weights
W_q = dequant(NF4(W)), not the original W. So the merged weight is dequant(W_q) + scale * B @ A,
computed in fp32: the merged model then computes what training computed, up to the dtype it is
stored in. Merging into the original full-precision W instead gives W + BA, which differs from the
trained model by W - W_q (the quantization error, which the adapter partly compensated); the merge
check measures that drift as a KL several times larger (docs in peftkit/artifacts/check.py). Merging
into the quantized weights themselves (what PEFT's merge on a bnb layer does: dequantize, add,
re-quantize) rounds the small delta away into NF4 steps and is what users see as "the merge
silently degraded my model"; we never do that. 8-bit (LLM.int8) bases are dequantized the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from ..errors import ModelError
from ..hardware import concrete_dtype
from ..modeling.load import LoadedBase, attention_backend, default_device, load_base
from ..recipe.schema import ModelSpec

# CLI spelling -> torch dtype of the saved merged weights.
OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_SPEC_TO_OUT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def default_out_dtype(spec: ModelSpec) -> str:
    """The dtype the run's base was loaded in (a 4-bit run's un-quantized layers use it too)."""
    return _SPEC_TO_OUT[concrete_dtype(spec.dtype)]


def load_trained(spec: ModelSpec, adapter_dir: Path) -> tuple[PeftModel, LoadedBase]:
    """The base exactly as training loaded it (same quantization) with the run's adapter on top."""
    base = load_base(spec)
    try:
        model = PeftModel.from_pretrained(base.model, str(adapter_dir))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{adapter_dir}: adapter does not load on base {spec.base}: {first}") from None
    return model.eval(), base


def dequantized_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of `model` in fp32 on the CPU (a 7B base is 28 GB in fp32: host memory, not the GPU's),
    bitsandbytes layers dequantized to the values their forward uses."""
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        kind = type(module).__name__
        for pname, param in module.named_parameters(recurse=False):
            key = prefix + pname
            if pname == "weight" and kind in ("Linear4bit", "LinearNF4", "LinearFP4"):
                state[key] = _dequantize_4bit(key, param)
            elif pname == "weight" and kind == "Linear8bitLt":
                state[key] = _dequantize_8bit(key, module)
            else:
                state[key] = param.detach().to("cpu", torch.float32)
        for bname, buf in module.named_buffers(recurse=False):
            if bname not in module._non_persistent_buffers_set:
                state[prefix + bname] = buf.detach().to("cpu", copy=True)
    return state


def _dequantize_4bit(key: str, param) -> torch.Tensor:
    import bitsandbytes.functional as bnbf

    quant_state = param.quant_state
    if getattr(quant_state, "packing_format_for_cpu", False):
        # The CPU inference kernel repacked this weight; load_base switches that off, so this is a bug.
        raise ModelError(f"{key}: 4-bit weight was repacked for bitsandbytes' CPU kernel and cannot be dequantized")
    # The same call bitsandbytes' forward makes; its output dtype is the one the base was loaded in.
    return bnbf.dequantize_4bit(param.data, quant_state).to("cpu", torch.float32)


def _dequantize_8bit(key: str, module) -> torch.Tensor:
    import bitsandbytes.functional as bnbf

    weight = module.weight
    cb = getattr(weight, "CB", None)
    scb = getattr(weight, "SCB", None)
    if cb is None or scb is None:
        cb, scb = module.state.CB, module.state.SCB
    if cb is None or scb is None:
        raise ModelError(f"{key}: 8-bit weight has no row statistics (SCB); cannot dequantize it")
    return bnbf.int8_vectorwise_dequant(cb, scb).to("cpu", torch.float32)


def merge_unquantized(trained: PeftModel, spec: ModelSpec, base_path: str, adapter_dir: Path) -> torch.nn.Module:
    """The merged fp32 model: `trained`'s base weights dequantized, the adapter in `adapter_dir` merged in.

    `trained` is consumed (its adapter layers are removed). `adapter_dir` is a separate argument so a
    test can merge a different adapter than the reference was built with.
    """
    base = trained.unload()
    state = dequantized_state_dict(base)
    del base, trained
    config = AutoConfig.from_pretrained(base_path, trust_remote_code=spec.trust_remote_code)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, trust_remote_code=spec.trust_remote_code,
        attn_implementation=attention_backend(spec.attn_implementation),
    )
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or set(state) - expected:
        extra = sorted(set(state) - expected)
        raise ModelError(f"{base_path}: dequantized weights do not fit the config (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()
    for p in model.parameters():
        p.requires_grad_(False)
    config = PeftConfig.from_pretrained(str(adapter_dir))
    if getattr(config, "init_lora_weights", True) not in (True, False):
        # PiSSA / OLoRA inits move the principal part out of the base when the adapter loads. `state` already
        # holds that residual base (load_trained ran the init), so running it again would subtract it twice.
        config.init_lora_weights = True
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), config=config)
    return peft_model.merge_and_unload().eval()


def save_merged(
    model: torch.nn.Module, tokenizer, out_dir: Path, *, dtype: str, base_path: str,
    stop_token_ids: tuple[int, ...], chat_template: str | None,
) -> None:
    """Weights (safetensors) in `dtype`, config, tokenizer with the run's chat template, and a generation
    config whose EOS is every token that ended a trained turn, with a pad that is none of them."""
    model = model.to(OUT_DTYPES[dtype])
    model.config.dtype = OUT_DTYPES[dtype]
    stops = [int(i) for i in stop_token_ids] or (
        [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    )
    pad = tokenizer.pad_token_id
    if pad is None or pad in stops or pad >= model.config.vocab_size:
        pad = None
    gen = _base_generation_config(base_path, model)
    gen.eos_token_id = stops[0] if len(stops) == 1 else stops
    gen.pad_token_id = pad
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    model.generation_config = gen
    model.config.eos_token_id = gen.eos_token_id
    model.config.pad_token_id = pad
    if chat_template:
        tokenizer.chat_template = chat_template
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def load_merged(folder: Path, spec: ModelSpec, dtype: str) -> torch.nn.Module:
    """A saved merged folder, as a user would load it (same attention backend as the reference), on the GPU
    where there is one."""
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=OUT_DTYPES[dtype], attn_implementation=attention_backend(spec.attn_implementation),
    ).to(default_device()).eval()


def _base_generation_config(base_path: str, model: torch.nn.Module) -> GenerationConfig:
    """The base's own sampling defaults (temperature, top_p, ...) are kept; only ids are replaced."""
    try:
        return GenerationConfig.from_pretrained(base_path)
    except OSError:
        return GenerationConfig.from_model_config(model.config)


__all__ = [
    "OUT_DTYPES", "default_out_dtype", "dequantized_state_dict", "load_merged", "load_trained",
    "merge_unquantized", "save_merged",
]
