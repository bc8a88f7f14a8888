"""What a method asks of the optimizer: LoRA+ parameter groups, and AdaLoRA's rank re-allocation per step."""

from __future__ import annotations

import torch
from peft import AdaLoraModel

from ..errors import Problem, RecipeError
from ..recipe.schema import AdapterSpec

LORA_B = (".lora_B.", ".lora_embedding_B.")
SAVED = ".modules_to_save."  # PEFT's copy of a module trained in full


def param_groups(model: torch.nn.Module, spec: AdapterSpec, lr: float, weight_decay: float, *,
                 saved_lr: float | None = None) -> list[dict]:
    """Optimizer groups of the trainable parameters. LoRA+ (adapter.lora_plus_ratio) puts the B matrices in a
    group of their own at ratio x lr: B starts at zero and must move further than A. `saved_lr`
    (train.modules_to_save_lr) gives the modules trained in full (adapter.modules_to_save) their own lr: a fresh
    classification head starts from nothing and reads features of small norm, so it needs far larger steps than
    the low-rank matrices beside it."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    saved = [p for n, p in trainable if saved_lr is not None and SAVED in n]
    if saved_lr is not None and not saved:
        raise RecipeError(None, [Problem(
            "train.modules_to_save_lr", "no module is trained in full: name it in adapter.modules_to_save "
            "(e.g. classifier) or leave this key out", saved_lr, True,
        )])
    ratio = spec.lora_plus_ratio
    b = [p for n, p in trainable if ratio is not None and any(m in n for m in LORA_B)]
    taken = {id(p) for p in b + saved}
    rest = [p for _, p in trainable if id(p) not in taken]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if b:
        groups.append({"params": b, "lr": lr * ratio, "weight_decay": weight_decay})
    if saved:
        groups.append({"params": saved, "lr": saved_lr, "weight_decay": weight_decay})
    return [g for g in groups if g["params"]]


def after_optimizer_step(model: torch.nn.Module, step: int) -> None:
    """AdaLoRA scores each rank from the gradients of the step just taken and prunes to its budget: call after
    `optimizer.step()` and before `optimizer.zero_grad()`, with the optimizer steps taken counting this one (1, 2,
    ..., train.max_steps; at step max_steps - adalora_tfinal the final ranks are fixed). No-op for other methods."""
    inner = getattr(model, "module", model)  # DDP wraps the PeftModel
    tuner = getattr(inner, "base_model", None)
    if isinstance(tuner, AdaLoraModel):
        tuner.update_and_allocate(step)
