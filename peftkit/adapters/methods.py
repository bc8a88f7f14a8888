"""adapter section -> the PEFT config of its method. One builder per method, in a literal dict."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peft import (
    AdaLoraConfig,
    BOFTConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    OFTConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    TaskType,
    VeraConfig,
)

from ..recipe.schema import AdapterSpec
from ..recipe.schema.adapter import PROMPT_LEARNING
from .targets import feedforward_targets, resolve_targets

# loftq starts like default: peftkit.adapters.loftq then replaces A and B (PEFT's own LoftQ runs on CUDA only).
LORA_INIT: dict[str, bool | str] = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora",
                                    "loftq": True}


def _lora(spec: AdapterSpec, common: dict, total_steps: int | None) -> PeftConfig:
    return LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, use_dora=spec.method == "dora",
        use_rslora=spec.method == "rslora", init_lora_weights=LORA_INIT[spec.init], bias="none", **common,
    )


def adalora_init_rank(spec: AdapterSpec) -> int:
    """The rank every AdaLoRA layer starts with (and is sized for) before pruning down to `rank`."""
    return spec.adalora_init_rank or max(spec.rank, round(1.5 * spec.rank))


def _adalora(spec: AdapterSpec, common: dict, total_steps: int | None) -> PeftConfig:
    if not total_steps:
        raise ValueError("attach_adapter(..., total_steps=train.max_steps) is required for adalora")
    return AdaLoraConfig(
        target_r=spec.rank, init_r=adalora_init_rank(spec),
        lora_alpha=spec.alpha, lora_dropout=spec.dropout, tinit=spec.adalora_tinit, tfinal=spec.adalora_tfinal,
        deltaT=spec.adalora_delta_t, total_step=total_steps, **common,
    )


BUILDERS: dict[str, Callable[[AdapterSpec, dict, int | None], PeftConfig]] = {
    "lora": _lora,
    "dora": _lora,
    "rslora": _lora,
    "adalora": _adalora,
    "loha": lambda s, common, _: LoHaConfig(r=s.rank, alpha=s.alpha, **common),
    "lokr": lambda s, common, _: LoKrConfig(r=s.rank, alpha=s.alpha, **common),
    "vera": lambda s, common, _: VeraConfig(r=s.rank, vera_dropout=s.dropout, **common),
    "ia3": lambda s, common, _: IA3Config(feedforward_modules=feedforward_targets(common["target_modules"]), **common),
    "oft": lambda s, common, _: OFTConfig(r=0, oft_block_size=s.block_size, **common),
    "boft": lambda s, common, _: BOFTConfig(
        boft_block_size=s.block_size, boft_n_butterfly_factor=s.butterfly_factor, **common
    ),
    "prompt_tuning": lambda s, common, _: PromptTuningConfig(num_virtual_tokens=s.num_virtual_tokens, **common),
    "prefix_tuning": lambda s, common, _: PrefixTuningConfig(num_virtual_tokens=s.num_virtual_tokens, **common),
}


def peft_config(spec: AdapterSpec, model: torch.nn.Module, *, task: str, total_steps: int | None = None) -> PeftConfig:
    """The PEFT config for `spec` on this model. Targets are resolved here (full module names, `adapter.layers`
    applied) so every method gets the same presets and the same error when nothing matches."""
    common: dict = {
        "task_type": TaskType.SEQ_CLS if task == "sequence_classification" else TaskType.CAUSAL_LM,
        "modules_to_save": list(spec.modules_to_save) or None,
    }
    if spec.method not in PROMPT_LEARNING:
        common["target_modules"] = resolve_targets(spec, model)
    return BUILDERS[spec.method](spec, common, total_steps)
