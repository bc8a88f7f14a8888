"""Which recipes the plain TRL route can mirror, checked before any process starts. Light: imports no ML library."""

from __future__ import annotations

from ..errors import Problem, RecipeError
from ..recipe import Recipe

# peftkit optimizer -> the transformers `optim` with the same update rule. None: TRL's default (torch AdamW,
# fused), the same maths as peftkit's torch AdamW.
OPTIMIZERS: dict[str, str | None] = {
    "adamw": None, "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
}
LORA_INITS: dict[str, bool | str] = {"default": True, "gaussian": "gaussian"}
PEER_METHODS = ("lora", "dora", "rslora")


def comparison_problems(recipe: Recipe) -> list[Problem]:
    """Settings the peer route (TRL SFTTrainer + PEFT LoraConfig) cannot reproduce exactly."""
    a, out = recipe.adapter, []
    if a.method not in PEER_METHODS:
        out.append(Problem("adapter.method", f"bench --vs trl compares LoRA-family recipes ({', '.join(PEER_METHODS)})",
                           a.method, True))
    if a.init not in LORA_INITS:
        out.append(Problem("adapter.init", "bench --vs trl needs an init a plain LoraConfig gives (default, gaussian)",
                           a.init, True))
    if a.lora_plus_ratio is not None:
        out.append(Problem("adapter.lora_plus_ratio", "bench --vs trl: the TRL route has no LoRA+ optimizer; set null",
                           a.lora_plus_ratio, True))
    if recipe.train.optimizer not in OPTIMIZERS:
        out.append(Problem("train.optimizer", f"bench --vs trl mirrors {', '.join(OPTIMIZERS)}",
                           recipe.train.optimizer, True))
    return out


def check_comparable(recipe: Recipe, source: str | None = None) -> None:
    problems = comparison_problems(recipe)
    if problems:
        raise RecipeError(source, problems)
