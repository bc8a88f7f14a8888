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
# train.objective -> the TRL trainer that mirrors it (trl_preference.py builds each)
PEER_TRAINERS = {
    "sft": "trl.SFTTrainer", "dpo": "trl.DPOTrainer", "ipo": "trl.DPOTrainer", "kto": "trl.KTOTrainer",
    "orpo": "trl.experimental.orpo.ORPOTrainer", "simpo": "trl.experimental.cpo.CPOTrainer",
}


def comparison_problems(recipe: Recipe) -> list[Problem]:
    """Settings the peer route (a TRL trainer + PEFT LoraConfig) cannot reproduce exactly."""
    a, t, out = recipe.adapter, recipe.train, []
    if a.method not in PEER_METHODS:
        out.append(Problem("adapter.method", f"bench --vs trl compares LoRA-family recipes ({', '.join(PEER_METHODS)})",
                           a.method, True))
    if a.init not in LORA_INITS:
        out.append(Problem("adapter.init", "bench --vs trl needs an init a plain LoraConfig gives (default, gaussian)",
                           a.init, True))
    if a.lora_plus_ratio is not None:
        out.append(Problem("adapter.lora_plus_ratio", "bench --vs trl: the TRL route has no LoRA+ optimizer; set null",
                           a.lora_plus_ratio, True))
    if t.modules_to_save_lr is not None:
        out.append(Problem("train.modules_to_save_lr", "bench --vs trl: the TRL route trains every parameter at "
                           "train.lr; set null", t.modules_to_save_lr, True))
    if recipe.train.optimizer not in OPTIMIZERS:
        out.append(Problem("train.optimizer", f"bench --vs trl mirrors {', '.join(OPTIMIZERS)}",
                           recipe.train.optimizer, True))
    if a.init_from:
        out.append(Problem("adapter.init_from", "bench --vs trl: the TRL route starts from a fresh adapter, not a "
                           "trained one; remove it (or bench the run it starts from)", a.init_from, True))
    if t.objective == "dpo" and t.preference.label_smoothing:
        # TRL 1.16's sigmoid loss has no smoothing; its `robust` loss is a different (unbiased) estimator
        out.append(Problem("train.preference.label_smoothing", "bench --vs trl: TRL's DPOTrainer (sigmoid loss) has "
                           "no conservative-DPO smoothing; set 0", t.preference.label_smoothing, True))
    if t.batch_size == "auto":
        out.append(Problem("train.batch_size", "bench --vs trl runs both routes at one micro-batch: give a number "
                           "(peftkit train measures auto; its run's recipe.yaml says what it chose)", "auto", True))
    elif t.objective == "kto" and recipe.data.format == "unpaired_preference" and t.batch_size < 2:
        out.append(Problem("train.batch_size", "bench --vs trl: TRL's KTOTrainer needs 2 or more answers per "
                           "micro-batch (its KL estimate mismatches them)", t.batch_size, True))
    return out


def check_comparable(recipe: Recipe, source: str | None = None) -> None:
    problems = comparison_problems(recipe)
    if problems:
        raise RecipeError(source, problems)
