"""Base model + tokenizer from a ModelSpec: zoo alias, local folder or hub id, optionally bitsandbytes-quantized."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)

from ..errors import ModelError
from ..hardware import concrete_dtype
from ..recipe.schema import ModelSpec, QuantizationSpec
from .fingerprint import fingerprint_folder
from .zoo import ResolvedBase, hub_unreachable_message, resolve_base

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Classification heads are trained in full (modules_to_save), so they must stay un-quantized.
HEAD_MODULES = ("score", "classifier", "pre_classifier")


@dataclass(frozen=True)
class LoadedBase:
    model: torch.nn.Module
    source: ResolvedBase
    fingerprint: str | None


def bnb_config(q: QuantizationSpec, *, task: str) -> BitsAndBytesConfig | None:
    if q.bits is None:
        return None
    skip = list(q.skip_modules) + (list(HEAD_MODULES) if task == "sequence_classification" else [])
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip or None)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[concrete_dtype(q.compute_dtype)],
        bnb_4bit_quant_storage=torch.uint8,
        llm_int8_skip_modules=skip or None,
    )


def attention_backend(choice: str) -> str:
    """A recipe resolved for training (peftkit.training.choices) names its backend; `auto` elsewhere (a bare recipe
    given to eval) is transformers' own default."""
    return "sdpa" if choice == "auto" else choice


def load_tokenizer(spec: ModelSpec, source: ResolvedBase | None = None):
    source = source or resolve_base(spec.base)
    try:
        return AutoTokenizer.from_pretrained(source.path_or_id, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure(spec.base, source, exc)) from None


def base_config(spec: ModelSpec):
    """The base's (text) config without loading weights; None when it cannot be read (load_base then reports why)."""
    try:
        config = AutoConfig.from_pretrained(resolve_base(spec.base).path_or_id, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError):
        return None
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _placement(device: torch.device) -> int | str:
    """A GPU by its index (Accelerate's prepare() compares that index with the process's device), else its name."""
    if device.type != "cuda":
        return str(device)
    return device.index if device.index is not None else torch.cuda.current_device()


def load_base(
    spec: ModelSpec, *, num_labels: int | None = None, label_names: tuple[str, ...] | None = None,
    device: torch.device | str | None = None, tokenizer=None,
) -> LoadedBase:
    """Loads frozen base weights onto `device` (default: this process's GPU, else the CPU); the adapter is attached
    later by peftkit.adapters. A dtype left at `auto` gets this machine's choice (peftkit.hardware).
    `tokenizer`: the one the data was prepared with (peftkit.data.prepare_data); the model takes its pad id where
    the config has none, and grows its embeddings when a pad token had to be added."""
    device = torch.device(device) if device is not None else default_device()
    source = resolve_base(spec.base)
    kwargs = dict(
        dtype=DTYPES[concrete_dtype(spec.dtype)],
        quantization_config=bnb_config(spec.quantization, task=spec.task),
        trust_remote_code=spec.trust_remote_code,
        attn_implementation=attention_backend(spec.attn_implementation),
    )
    if spec.quantization.bits is not None:
        # bitsandbytes quantizes while placing: straight onto this process's device (under DDP each rank its own)
        kwargs["device_map"] = {"": _placement(device)}
    try:
        if spec.task == "sequence_classification":
            if not num_labels:
                raise ModelError("model.task: sequence_classification needs labelled data (data.format: classification)")
            cfg = AutoConfig.from_pretrained(source.path_or_id, trust_remote_code=spec.trust_remote_code)
            names = list(label_names or [str(i) for i in range(num_labels)])
            cfg.num_labels = num_labels
            cfg.id2label = dict(enumerate(names))
            cfg.label2id = {n: i for i, n in enumerate(names)}
            model = AutoModelForSequenceClassification.from_pretrained(source.path_or_id, config=cfg, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source.path_or_id, **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(_load_failure(spec.base, source, exc)) from None
    if tokenizer is not None:
        if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))  # a new pad row; pad positions are masked, never trained
    if spec.quantization.bits is None:
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    keep_cpu_4bit_differentiable(model)
    fp = fingerprint_folder(Path(source.path_or_id)) if source.kind != "hub" else None
    return LoadedBase(model=model, source=source, fingerprint=fp)


def keep_cpu_4bit_differentiable(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    The first time a Linear4bit runs in eval mode on an AVX512-BF16 CPU, bitsandbytes repacks its weight
    in place for a kernel that has no backward. Training after any eval (our eval-before) then gets silently
    wrong gradients: the quickstart went from loss 0.65 to 13 in 20 steps. That kernel was not faster for
    batched generation here either (18.3 s vs 16.7 s for 32 prompts x 48 tokens), so we switch it off on
    the layers we load. Returns how many layers were changed.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _load_failure(base: str, source: ResolvedBase, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if source.kind == "hub":
        return f"{hub_unreachable_message(base)} ({first})"
    return f"model.base {base!r}: cannot load {source.path_or_id}: {first}"
