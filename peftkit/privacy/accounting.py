"""The privacy budget of a run, accounted by Opacus: the noise multiplier for a target epsilon, the delta, and the
epsilon spent so far from the actual (noise multiplier, sampling rate, steps) history.

What the guarantee covers: the training rows, each row counted as one example (add/remove one row), for the
adapter weights the run releases. It says nothing about the base model's pre-training data, and the training
loss and token counts printed while training are computed from the private rows without noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from ..errors import PrivacyError
from ..recipe.schema import PrivacySpec

COVERS = ("the training rows, one row = one example (add/remove), for the released adapter weights; not the base "
          "model's pre-training data, nor the training loss printed while training")


@dataclass(frozen=True)
class PrivacyPlan:
    rows: int              # training rows the sampling rate is taken over
    expected_batch: int    # train.batch_size x train.grad_accum: the mean of the Poisson-sampled batch sizes
    sample_rate: float     # expected_batch / rows
    noise_multiplier: float
    delta: float
    max_grad_norm: float   # per example
    steps: int             # train.max_steps
    accountant: str        # rdp | prv
    target_epsilon: float | None
    epsilon_at_end: float  # what train.max_steps spend, accounted before the run starts

    def to_dict(self) -> dict:
        return {**asdict(self), "sampling": "poisson", "covers": COVERS}


def delta_for(spec: PrivacySpec, rows: int) -> float:
    loosest = 1 / (2 * rows)
    if spec.delta == "auto":
        return loosest
    if spec.delta > loosest:
        raise PrivacyError(f"train.privacy.delta {spec.delta:g}: weaker than 1 / (2 x {rows} training rows) = "
                          f"{loosest:.3g}; set it at most that, or auto")
    return spec.delta


def epsilon_of(accountant: str, history, delta: float) -> float:
    """Epsilon spent by a history of (noise_multiplier, sample_rate, steps), by Opacus's accountant."""
    acc = create_accountant(mechanism=accountant)
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta=delta)) if acc.history else 0.0


def plan_privacy(spec: PrivacySpec, *, rows: int, expected_batch: int, steps: int, history=()) -> PrivacyPlan:
    """`history`: the accountant's history of a checkpoint this run resumes from. Raises PrivacyError when the
    run's steps would spend more than the target epsilon."""
    if expected_batch >= rows:
        raise PrivacyError(f"train.privacy: the expected batch ({expected_batch} = batch_size x grad_accum) must be "
                          f"smaller than the {rows} training rows (sampling rate below 1)")
    delta, q = delta_for(spec, rows), expected_batch / rows
    sigma = spec.noise_multiplier
    if sigma is None:
        try:
            sigma = get_noise_multiplier(target_epsilon=spec.epsilon, target_delta=delta, sample_rate=q,
                                         steps=steps, accountant=spec.accountant)
        except ValueError:
            raise PrivacyError(f"train.privacy.epsilon {spec.epsilon:g}: unreachable in {steps} steps at sampling "
                              f"rate {q:.3g} (needs noise above 1e6); raise epsilon or lower train.max_steps") from None
    done = sum(h[2] for h in history)
    spent = [*history, (sigma, q, steps - done)] if steps > done else list(history)
    at_end = epsilon_of(spec.accountant, spent, delta)
    if spec.epsilon is not None and at_end > spec.epsilon:
        raise PrivacyError(f"train.privacy.epsilon {spec.epsilon:g}: {steps} steps would spend epsilon {at_end:.3f} "
                          f"(the checkpoint's {done} steps at its noise, the rest at {sigma:.3f}); lower "
                          "train.max_steps or raise epsilon")
    return PrivacyPlan(rows, expected_batch, q, float(sigma), delta, spec.max_grad_norm, steps, spec.accountant,
                       spec.epsilon, at_end)


class Budget:
    """Opacus's accountant for one run: a step per noised gradient; saved in checkpoints, restored on resume."""

    def __init__(self, plan: PrivacyPlan):
        self.plan = plan
        self.accountant = create_accountant(mechanism=plan.accountant)
        self._epsilon: float | None = 0.0

    def step(self) -> None:
        self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)
        self._epsilon = None

    def epsilon(self) -> float:
        if self._epsilon is None:
            self._epsilon = epsilon_of(self.plan.accountant, self.accountant.history, self.plan.delta)
        return self._epsilon

    def exhausted(self) -> bool:
        """Whether one more step would spend more than the target epsilon (never, with no target)."""
        if self.plan.target_epsilon is None:
            return False
        more = [*self.accountant.history, (self.plan.noise_multiplier, self.plan.sample_rate, 1)]
        return epsilon_of(self.plan.accountant, more, self.plan.delta) > self.plan.target_epsilon

    def state_dict(self) -> dict:
        return {"mechanism": self.plan.accountant, "history": [list(h) for h in self.accountant.history]}

    def load_state_dict(self, state: dict) -> None:
        self.accountant.load_state_dict({"mechanism": state["mechanism"],
                                         "history": [tuple(h) for h in state["history"]]})
        self._epsilon = None
