"""Write a merged HF causal LM as one GGUF file with the `gguf` package (no llama.cpp build).

The file holds what llama.cpp and transformers' GGUF loader need: the architecture's metadata,
the tokenizer (gguf_tokenizer.py), the chat template, and the weights under llama.cpp's tensor
names, in f16 or q8_0. Tensors are streamed one at a time (header and tensor index first, then the
data), so memory stays at one tensor however large the model is. The file is written under a
`.partial` name and renamed at the end: an interrupted export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape, quantize
from safetensors import safe_open

from peftkit.errors import PeftkitError
from peftkit.artifacts.gguf_tokenizer import add_vocab, read_vocab

GgufType = Literal["f16", "q8_0"]
_FILE_TYPES = {"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}


@dataclass(frozen=True)
class GgufReport:
    """What `write_gguf` wrote."""

    path: Path
    architecture: str  # the GGUF `general.architecture`: llama or qwen2
    tensor_count: int
    file_bytes: int
    gguf_type: GgufType
    chat_template: str | None = None  # for the Ollama Modelfile
    eos_token: str | None = None


@dataclass(frozen=True)
class _Arch:
    gguf_arch: str
    permute_qk: bool  # llama.cpp's llama graph uses interleaved rotary pairs; HF rotates halves
    qkv_bias: bool


# HF `architectures[0]` -> how llama.cpp stores it. Mistral is a llama graph in llama.cpp.
_ARCHS = {
    "LlamaForCausalLM": _Arch("llama", permute_qk=True, qkv_bias=False),
    "MistralForCausalLM": _Arch("llama", permute_qk=True, qkv_bias=False),
    "Qwen2ForCausalLM": _Arch("qwen2", permute_qk=False, qkv_bias=True),
}
_SUPPORTED = "llama, mistral, qwen2"

_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_BIAS_NAMES = {f"self_attn.{p}_proj.bias": f"attn_{p}.bias" for p in "qkv"}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


@dataclass(frozen=True)
class _Tensor:
    gguf_name: str
    hf_name: str
    file: Path
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    permute_heads: int | None  # rows are llama.cpp-permuted in groups of this many heads

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape[:-1], dtype=np.int64)) * (self.shape[-1] // block) * size


def write_gguf(
    hf_dir: Path, out_file: Path, *, gguf_type: GgufType = "f16", name: str | None = None
) -> GgufReport:
    """Export the merged model in `hf_dir` (config.json, safetensors, tokenizer) to `out_file`."""
    hf_dir, out_file = Path(hf_dir), Path(out_file)
    if gguf_type not in _FILE_TYPES:
        raise PeftkitError(f"gguf_type: expected one of {sorted(_FILE_TYPES)} (got {gguf_type!r})")
    arch = _arch(hf_dir, _read_config_json(hf_dir))  # before transformers tries to parse an unknown config
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    _check_config(hf_dir / "config.json", config, arch)
    vocab = read_vocab(hf_dir, config.vocab_size)
    tensors = _plan(hf_dir, config, arch, gguf_type)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    writer = GGUFWriter(partial, arch.gguf_arch)
    try:
        writer.add_name(name or hf_dir.name)
        _add_hparams(writer, config, arch, gguf_type)
        add_vocab(writer, vocab)
        for t in tensors:
            byte_shape = quant_shape_to_byte_shape(t.shape, t.qtype)
            writer.add_tensor_info(t.gguf_name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for data in _converted(tensors):
            writer.write_tensor_data(data)
        writer.close()
        os.replace(partial, out_file)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return GgufReport(
        path=out_file,
        architecture=arch.gguf_arch,
        tensor_count=len(tensors),
        file_bytes=out_file.stat().st_size,
        gguf_type=gguf_type,
        chat_template=vocab.chat_template,
        eos_token=vocab.eos_token,
    )


def _read_config_json(hf_dir: Path) -> dict[str, Any]:
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise PeftkitError(f"{config_file}: missing; is {hf_dir} a merged HF model folder?")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PeftkitError(f"{config_file}: not valid JSON ({err})") from err


def _arch(hf_dir: Path, raw: dict[str, Any]) -> _Arch:
    names = raw.get("architectures") or [raw.get("model_type", "unknown")]
    if names[0] not in _ARCHS:
        raise PeftkitError(
            f"{hf_dir / 'config.json'}: architecture {names[0]!r} is not supported for GGUF export yet "
            f"(supported: {_SUPPORTED})"
        )
    return _ARCHS[names[0]]


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_config(config_file: Path, config: Any, arch: _Arch) -> None:
    """Refuse what neither llama.cpp's graph nor transformers' GGUF loader would reproduce."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise PeftkitError(f"{config_file}: rope_type {rope['rope_type']!r} is not supported for GGUF export yet")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise PeftkitError(f"{config_file}: hidden_act {config.hidden_act!r} is not supported for GGUF export yet")
    if not arch.qkv_bias and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        raise PeftkitError(f"{config_file}: attention_bias/mlp_bias are not supported for GGUF export of llama yet")


def _add_hparams(writer: GGUFWriter, config: Any, arch: _Arch, gguf_type: GgufType) -> None:
    """The `<arch>.*` keys transformers' loader maps back to the config (and llama.cpp runs on)."""
    rope = getattr(config, "rope_parameters", None) or {}
    # Mistral's sliding_window is not written: llama.cpp's llama graph and the HF reload ignore it too.
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    head_dim = _head_dim(config)
    if arch.gguf_arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(_FILE_TYPES[gguf_type])
    writer.add_quantization_version(GGML_QUANT_VERSION)


def _weight_files(hf_dir: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it (one file, or shards listed by an index)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        files = {name: hf_dir / file for name, file in weight_map.items()}
        for file in sorted(set(files.values())):
            if not file.is_file():
                raise PeftkitError(f"{file}: missing (listed in {index})")
        return files
    single = hf_dir / "model.safetensors"
    if not single.is_file():
        raise PeftkitError(f"{single}: missing (nor is there a model.safetensors.index.json)")
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def _gguf_name(hf_name: str, arch: _Arch) -> str | None:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if hf_name == "lm_head.weight":
        return "output.weight"
    if match := _LAYER_RE.fullmatch(hf_name):
        layer, rest = match.groups()
        leaf = _LAYER_NAMES.get(rest) or (_BIAS_NAMES.get(rest) if arch.qkv_bias else None)
        return f"blk.{layer}.{leaf}" if leaf else None
    return None


def _expected_names(config: Any, arch: _Arch, tied: bool) -> list[str]:
    """Every GGUF tensor a complete model has, in the order they are written."""
    layer_leaves = list(_LAYER_NAMES.values()) + (list(_BIAS_NAMES.values()) if arch.qkv_bias else [])
    names = ["token_embd.weight"]
    names += [f"blk.{i}.{leaf}" for i in range(config.num_hidden_layers) for leaf in layer_leaves]
    names += ["output_norm.weight"] + ([] if tied else ["output.weight"])
    return names


def _plan(hf_dir: Path, config: Any, arch: _Arch, gguf_type: GgufType) -> list[_Tensor]:
    """Which HF tensor becomes which GGUF tensor, with its stored type; refuses anything unknown."""
    tied = bool(getattr(config, "tie_word_embeddings", False))
    files = _weight_files(hf_dir)
    found: dict[str, tuple[str, Path]] = {}
    for hf_name, file in files.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed from the config / shared with the embedding
        if "lora_" in hf_name or ".base_layer." in hf_name:
            raise PeftkitError(f"{file}: tensor {hf_name!r} belongs to an unmerged adapter; merge it first")
        gguf_name = _gguf_name(hf_name, arch)
        if gguf_name is None:
            raise PeftkitError(f"{file}: tensor {hf_name!r} has no GGUF name for {arch.gguf_arch}")
        found[gguf_name] = (hf_name, file)

    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads or config.num_attention_heads}
    plan = []
    for gguf_name in _expected_names(config, arch, tied):
        if gguf_name not in found:
            raise PeftkitError(f"{hf_dir}: the weights lack the tensor that becomes {gguf_name!r}")
        hf_name, file = found.pop(gguf_name)
        with safe_open(file, framework="pt") as f:
            shape = tuple(f.get_slice(hf_name).get_shape())
        kind = gguf_name.split(".")[-2]
        plan.append(
            _Tensor(
                gguf_name=gguf_name,
                hf_name=hf_name,
                file=file,
                shape=shape,
                qtype=_stored_type(shape, gguf_type),
                permute_heads=heads.get(kind) if arch.permute_qk else None,
            )
        )
    if found:  # e.g. a layer beyond num_hidden_layers: the config and the weights disagree
        raise PeftkitError(f"{hf_dir}: tensors the config has no place for: {sorted(found)[:3]}")
    return plan


def _stored_type(shape: tuple[int, ...], gguf_type: GgufType) -> GGMLQuantizationType:
    """Norms and biases (1-D) stay f32; matrices take the requested type, f16 where q8_0 cannot block."""
    if len(shape) < 2:
        return GGMLQuantizationType.F32
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]
    if gguf_type == "q8_0" and shape[-1] % block == 0:
        return GGMLQuantizationType.Q8_0
    return GGMLQuantizationType.F16


def _converted(tensors: list[_Tensor]) -> Iterator[np.ndarray]:
    """Each tensor's bytes as GGUF stores them, loaded and converted one at a time."""
    import torch

    for t in tensors:
        with safe_open(t.file, framework="pt") as f:
            data = f.get_tensor(t.hf_name).to(torch.float32).numpy()
        if t.permute_heads:
            data = _permute_rotary(data, t.permute_heads)
        yield quantize(data, t.qtype).view(np.uint8)


def _permute_rotary(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder each head's rows from HF's (first half, second half) to llama.cpp's interleaved pairs."""
    half = weights.shape[0] // n_heads // 2
    return weights.reshape(n_heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
