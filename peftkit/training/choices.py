"""Run-time choices: every `auto` in a recipe resolved once, for this machine and this recipe, with its reason.

The trainer calls resolve(); the recipe it returns has no `auto` left and is what the run directory records, so
eval, merge and export of that run load the model exactly as training did.

- precision (model.dtype, quantization.compute_dtype, train.mixed_precision): peftkit.hardware's rule, which
  `peftkit doctor` shows too.
- recompute (train.gradient_checkpointing): on when a batch_size x max_length batch's activations would take more
  than a quarter of the device's memory (the GPU's, or RAM on CPU), counted by peftkit.training.memory, the
  same model of memory `peftkit plan` shows. What it costs and saves:
  benchmarks/results/levers.md, row "checkpointing" against row "plain".
- packing (data.packing): packed rows only with recompute on; levers.md, rows "packing" and "defaults".
- attention (model.attn_implementation): sdpa, except eager for decoders trained on padded batches on CPU;
  levers.md, rows "sdpa" against "plain", and "defaults_eager" against "defaults".
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from ..adapters.estimate import base_shape
from ..hardware import Hardware, Precision, choose_precision
from .memory import BUDGET_SHARE, ActivationModel, activation_bytes, architecture, model_for
from ..recipe import Recipe, recipe_from_dict
from ..recipe.schema.adapter import PROMPT_LEARNING
from ..recipe.schema.data import PREFERENCE_FORMATS



@dataclass(frozen=True)
class CheckpointingChoice:
    enabled: bool
    why: str
    estimate_bytes: int | None = None
    budget_bytes: int | None = None


def device_memory_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def config_values(config) -> dict:
    """A transformers config (or any object with the same attributes) as config.json's dict."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))


def activation_estimate(tokens: int, config, activations: ActivationModel | None = None) -> int | None:
    """Activations of a `tokens`-token micro-batch without recompute: peftkit.training.memory, the model
    `peftkit plan` uses. None when the config gives no layer count / hidden size."""
    shape = base_shape(config_values(config))
    if shape is None:
        return None
    return activation_bytes(shape, tokens, activations or ActivationModel(), recompute=False)


def activation_model(recipe: Recipe, precision: Precision, config, *, cuda: bool) -> ActivationModel:
    """The activation model of this recipe on this machine: the resolved precision, eager or fused attention
    (before packing is decided: padded rows), the architecture's norms and MLP."""
    autocast = cuda and precision.mixed_precision.value != "no"
    act_bytes = 2 if autocast or precision.model_dtype.value != "float32" else 4
    eager = choose_attention(recipe.model.attn_implementation, recipe.model.task, False, cuda=cuda) == "eager"
    gated, rms, attention_dropout = architecture(config_values(config))
    return model_for(recipe.adapter, act_bytes=act_bytes, autocast=autocast, cuda=cuda,
                     eager_seq=recipe.data.max_length if eager or attention_dropout else None, gated_mlp=gated,
                     rms_norm=rms, chunked_loss=bool(recipe.train.selective_logits and recipe.train.logits_chunk),
                     base_dropout=attention_dropout)


def choose_checkpointing(setting: bool | str, *, batch_size: int, max_length: int, config,
                         device_bytes: int | None = None,
                         activations: ActivationModel | None = None) -> CheckpointingChoice:
    if setting != "auto":
        return CheckpointingChoice(bool(setting), "set in the recipe")
    tokens = batch_size * max_length
    estimate = activation_estimate(tokens, config, activations)
    if estimate is None:
        return CheckpointingChoice(True, "auto: the model config gives no layer count / hidden size to estimate from")
    budget = int(BUDGET_SHARE * (device_bytes or device_memory_bytes()))
    on = estimate > budget
    why = (f"auto: activations of a {batch_size} x {max_length}-token batch ~{estimate / 2**30:.1f} GiB "
           f"{'>' if on else '<='} {budget / 2**30:.1f} GiB, {BUDGET_SHARE:.0%} of device memory)")
    return CheckpointingChoice(on, why, estimate, budget)


def sequences_per_example(objective: str) -> int:
    """Rows one example puts through the model: a pair's two answers; kto adds a mismatched partner."""
    return {"sft": 1, "kto": 2}.get(objective, 2)


def choose_packing(recipe: Recipe, recompute: bool) -> bool:
    """data.packing: auto packs causal LM batches when activations are recomputed, unless PEFT's prompt learning
    would drop the position ids that keep packed examples apart."""
    if recipe.data.packing != "auto":
        return recipe.data.packing
    return (recompute and recipe.model.task == "causal_lm" and recipe.data.format != "classification"
            and recipe.data.format not in PREFERENCE_FORMATS and recipe.adapter.method not in PROMPT_LEARNING)


def choose_attention(setting: str, task: str, packed: bool, *, cuda: bool) -> str:
    if setting != "auto":
        return setting
    return "eager" if task == "causal_lm" and not packed and not cuda else "sdpa"


def resolve_precision(recipe: Recipe, hw: Hardware) -> tuple[Recipe, Precision]:
    """The recipe with every precision `auto` replaced by this machine's choice, validated again (so rules that
    depend on the dtype, e.g. ia3 on a quantized base, see the concrete value)."""
    m, t = recipe.model, recipe.train
    choice = choose_precision(m.dtype, m.quantization.compute_dtype, t.mixed_precision, hw)
    raw = recipe.model_dump(mode="json")
    raw["model"]["dtype"] = choice.model_dtype.value
    raw["train"]["mixed_precision"] = choice.mixed_precision.value
    if m.quantization.bits == 4:
        raw["model"]["quantization"]["compute_dtype"] = choice.compute_dtype.value
    return recipe_from_dict(raw, source=f"recipe {recipe.name} (precision resolved)"), choice


@dataclass(frozen=True)
class Choices:
    precision: Precision
    recompute: CheckpointingChoice
    packing: bool
    attention: str

    def to_dict(self) -> dict:
        return {"precision": self.precision.to_dict(), "gradient_checkpointing": asdict(self.recompute),
                "packing": self.packing, "attn_implementation": self.attention}


def resolve(
    recipe: Recipe, hw: Hardware, precision: Precision, *, config, device_bytes: int | None = None
) -> tuple[Recipe, Choices]:
    """The rest, once the base's (text) `config` can be read (after preflight: reading it may pull a zoo model),
    for a recipe resolve_precision already made concrete. Returns the recipe with no `auto` left."""
    t = recipe.train
    rows = sequences_per_example(t.objective)
    recompute = choose_checkpointing(t.gradient_checkpointing, batch_size=t.batch_size * rows,
                                     max_length=recipe.data.max_length, config=config, device_bytes=device_bytes,
                                     activations=activation_model(recipe, precision, config, cuda=hw.cuda))
    packing = choose_packing(recipe, recompute.enabled)
    attention = choose_attention(recipe.model.attn_implementation, recipe.model.task, packing, cuda=hw.cuda)
    raw = recipe.model_dump(mode="json")
    raw["train"]["gradient_checkpointing"] = recompute.enabled
    raw["data"]["packing"] = packing
    raw["model"]["attn_implementation"] = attention
    resolved = recipe_from_dict(raw, source=f"recipe {recipe.name} (resolved)")
    return resolved, Choices(precision, recompute, packing, attention)
