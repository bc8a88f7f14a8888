"""`train.privacy:` — differentially private training (DP-SGD through Opacus), and the recipe rules it needs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section

PRIVATE_METHODS = ("lora", "rslora")  # plain nn.Linear adapters: Opacus computes their per-example gradients


class PrivacySpec(Section):
    epsilon: float | None = Field(
        None, gt=0, le=100, description="target epsilon for the whole run; the noise multiplier is chosen so that "
        "train.max_steps spend at most this much (give this or noise_multiplier, not both)"
    )
    noise_multiplier: float | None = Field(
        None, gt=0, le=1e4, description="Gaussian noise std / max_grad_norm, fixed; the epsilon it spends is "
        "reported (give this or epsilon, not both)"
    )
    delta: float | Literal["auto"] = Field(
        "auto", description="the delta of (epsilon, delta); auto: 1 / (2 x training rows); a number must be at "
        "most that (stricter)"
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="each example's gradient (all trainable adapter weights together) is clipped to this "
        "L2 norm before the noise is added; train.max_grad_norm is not used in private runs"
    )
    accountant: Literal["rdp", "prv"] = Field(
        "rdp", description="Opacus's privacy accountant: rdp (Renyi DP, slightly loose) or prv (privacy random "
        "variables, tighter, slower to compute)"
    )
    sampling: Literal["poisson"] = Field(
        "poisson", description="each training row joins each step independently with probability "
        "effective batch / rows, as the accountant assumes; the draws and the noise are a function of (a secret "
        "drawn from the OS when the run starts and kept in its checkpoints, step)"
    )

    @model_validator(mode="after")
    def _one_of_epsilon_or_noise(self):
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of epsilon (a target) or noise_multiplier")
        if self.delta != "auto" and not 0 < self.delta < 1:
            raise ValueError(f"delta {self.delta}: must be between 0 and 1, or auto")
        return self


def privacy_problems(method: str, packing, train) -> list[tuple[str, str, object]]:
    """(dotted key, message, value) for every recipe setting that would silently break the DP guarantee."""
    if train.privacy is None:
        return []
    why = "train.privacy"
    problems = []
    if method not in PRIVATE_METHODS:
        problems.append(("adapter.method", f"{why} trains {'/'.join(PRIVATE_METHODS)} adapters (per-example "
                         f"gradients of plain linear layers); {method} is not supported", method))
    if packing is True:
        problems.append(("data.packing", f"{why}: packing puts several examples in one row, so one row's clipped "
                         "gradient would bound several people's data; set data.packing false", packing))
    if train.objective != "sft":
        problems.append(("train.objective", f"{why} trains sft only (per-example losses of paired preference "
                         "objectives are not implemented)", train.objective))
    if train.batch_size == "auto":
        problems.append(("train.batch_size", f"{why}: batch_size auto measures steps on the private rows; give a "
                         "number (the expected batch is batch_size x grad_accum)", train.batch_size))
    if train.gradient_checkpointing is True:
        problems.append(("train.gradient_checkpointing", f"{why}: recomputed activations would be captured twice "
                         "by the per-example gradient hooks; set it false", True))
    return problems
