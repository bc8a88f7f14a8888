"""Turn a GGUF file into a plain Hugging Face folder (safetensors + tokenizer + chat template).

transformers can load a GGUF (it dequantizes every tensor) but refuses to `save_pretrained` that
model and refuses to combine it with a bitsandbytes `quantization_config`. So the import builds a
fresh model from the GGUF's config, copies the dequantized weights in (strict, so nothing is
silently left at its random init) and saves that. The folder then loads like any HF checkpoint,
4-bit and 8-bit included.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from peftkit.errors import ModelError


@dataclass(frozen=True)
class GgufImport:
    """What the GGUF said about itself, recorded in the zoo marker so a reader need not reload it."""

    architecture: str
    parameters: int
    dtype: str
    bos_token_id: int | None
    eos_token: str | None
    eos_token_id: int | None
    pad_token_id: int | None
    has_chat_template: bool


def import_gguf(gguf_path: Path, out_dir: Path) -> GgufImport:
    """Write `gguf_path` as an HF folder into the existing, empty `out_dir` (weights saved in float32).

    float32, not bf16: the Q4_1 values dequantize to `d * q + m` with fp16 scales, which bf16 cannot
    hold exactly; fp32 keeps the folder bit-identical to what the GGUF loader produces (the tests
    compare logits exactly) and leaves the choice of training dtype to `model.dtype`. The cost is
    ~540 MB on disk instead of ~270 MB for a 135M model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:  # unreadable file, unsupported architecture
        raise ModelError(f"{gguf_path}: transformers cannot load this GGUF file ({exc})") from exc

    config = copy.deepcopy(gguf_model.config)
    # The GGUF loader marks the config as quantized; the copy holds plain float weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model

    # Chat models stop on the GGUF's eos (SmolLM2-Instruct: <|im_end|>); generate() reads these.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # The GGUF tokenizer carries no length limit; the position table is the real one.
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    return GgufImport(
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        dtype="float32",
        bos_token_id=tokenizer.bos_token_id,
        eos_token=tokenizer.eos_token,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        has_chat_template=bool(tokenizer.chat_template),
    )
