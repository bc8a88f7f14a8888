"""The adapter section -> a PEFT config attached to the frozen base, plus a trainable-parameter report."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from .errors import RecipeError, Problem
from .recipe.schema import AdapterSpec

# Leaf names of linear layers in each group, across Llama/Mistral/Qwen2 and BERT-style encoders.
PRESETS = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "attention.output.dense"),
    "mlp": ("gate_proj", "up_proj", "down_proj", "intermediate.dense", "output.dense"),
}
# Output heads are never adapted by a preset: they are trained in full via modules_to_save when needed.
HEADS = ("lm_head", "score", "classifier", "pre_classifier", "pooler.dense")


@dataclass(frozen=True)
class ParamReport:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({100 * self.share:.3f}%)"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]


def resolve_targets(spec: AdapterSpec, model: torch.nn.Module) -> list[str]:
    """Explicit module-name suffixes that exist in this model; an empty match is an error naming what exists."""
    names = [n for n in linear_module_names(model) if not any(n == h or n.endswith("." + h) for h in HEADS)]
    if spec.targets == "all-linear":
        wanted = names
    elif isinstance(spec.targets, str):
        group = PRESETS[spec.targets]
        # "output.dense" must not also catch BERT's "attention.output.dense" under the mlp preset
        wanted = [n for n in names if any(n.endswith("." + g) or n == g for g in group)]
        if spec.targets == "mlp":
            wanted = [n for n in wanted if "attention." not in n]
    else:
        wanted = [n for n in names if any(n == t or n.endswith("." + t) for t in spec.targets)]
    if not wanted:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise RecipeError(None, [Problem(
            "adapter.targets", f"matches no linear module of this model (its linear modules: {', '.join(leaves)})",
            spec.targets, True,
        )])
    return wanted


def peft_config(spec: AdapterSpec, model: torch.nn.Module, *, task: str) -> LoraConfig:
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=resolve_targets(spec, model),
        modules_to_save=list(spec.modules_to_save) or None,
        task_type=TaskType.SEQ_CLS if task == "sequence_classification" else TaskType.CAUSAL_LM,
        bias="none",
    )


def attach_adapter(model: torch.nn.Module, spec: AdapterSpec, *, task: str) -> PeftModel:
    """Wrap the frozen base; adapter weights are kept in fp32 whatever the base dtype (bf16 adapters diverge)."""
    peft_model = get_peft_model(model, peft_config(spec, model, task=task))
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def param_report(model: torch.nn.Module) -> ParamReport:
    trainable = total = 0
    for p in model.parameters():
        # bitsandbytes packs two 4-bit values per byte: count logical parameters, not storage elements
        n = p.numel() * 2 if p.__class__.__name__ == "Params4bit" else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return ParamReport(trainable=trainable, total=total)
