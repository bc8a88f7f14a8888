"""One DP-SGD step, from Opacus's pieces in order: draw the step's rows (Poisson), per-example losses, backward
(Opacus's GradSampleHooks record each example's gradient of the trainable adapter weights only; the frozen, maybe
4-bit, base gets none), clip each example's gradient to max_grad_norm and sum (DPOptimizer.clip_and_accumulate),
add Gaussian noise of std noise_multiplier x max_grad_norm (DPOptimizer.add_noise), divide by the expected batch,
account the step (Opacus's accountant). fit() then steps the wrapped optimizer as in any run. The rows drawn and the
noise of step k are functions of (the run's secret, k) (privacy.sampling): a resumed run repeats them exactly.

The private loss: an example's loss is the mean cross-entropy over its own trained tokens (causal LM; response-only
masks as elsewhere) or its cross-entropy (classification), and the step's gradient is
    (sum over the sampled examples of clip(grad of the example's loss) + N(0, (noise_multiplier x max_grad_norm)^2))
    / expected batch.
It is not token-weighted over the accumulation window as non-private fit() is: a weight that depends on the other
rows would let one row change every other row's contribution, and the sensitivity would no longer be max_grad_norm.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import send_to_device
from opacus.grad_sample import GradSampleHooks
from opacus.optimizers import DPOptimizer

from ..errors import PrivacyError
from ..modeling.loss import supports_selective_logits
from ..modeling.tokens import IGNORE_INDEX, trained_tokens
from .accounting import Budget, PrivacyPlan
from . import sampling
from .sampling import PoissonBatches


@dataclass(frozen=True)
class PrivateGrads:
    loss: float          # mean of the step's per-example losses (0.0 for an empty draw); not private
    grad_norm: float     # norm of the noised, averaged gradient
    examples: int        # rows drawn this step
    clipped: int         # of those, rows whose gradient was longer than max_grad_norm
    tokens: int          # non-pad tokens
    trained_tokens: int


def example_losses(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """One loss per row: cross-entropy (classification) or mean token cross-entropy over the row's trained tokens."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if labels.dim() == 1:
        return F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
    targets = labels[:, 1:]  # the logit at position t predicts token t + 1
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    if supports_selective_logits(model):
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1][:, keep]
    kept = targets[:, keep]
    nll = F.cross_entropy(logits.float().transpose(1, 2), kept, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1) / (kept != IGNORE_INDEX).sum(dim=1).clamp(min=1)


class PrivateSGD:
    """Per-example gradients on `model`'s trainable parameters for as long as it lives; close() removes the hooks."""

    def __init__(self, model: torch.nn.Module, optimizer, plan: PrivacyPlan, *, rows, collate, batch_size: int,
                 device):
        try:
            self.hooks = GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=True)
        except NotImplementedError as exc:
            raise PrivacyError(f"train.privacy: Opacus cannot compute per-example gradients here ({exc})") from None
        # noise and clipping only; the step itself is the wrapped optimizer's, taken by fit()
        self.dp = DPOptimizer(optimizer, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                              expected_batch_size=plan.expected_batch, loss_reduction="sum")
        self.plan, self.budget = plan, Budget(plan)
        self.sampler = PoissonBatches(len(rows), plan.sample_rate, sampling.fresh_secret(), batch_size=batch_size,
                                      lengths=[len(r["input_ids"]) for r in rows])
        self.rows, self.collate, self.device = rows, collate, device

    def gradients(self, model: torch.nn.Module, step: int) -> PrivateGrads:
        """Leaves the noised gradient of step `step` (0-based) in each trainable parameter's .grad."""
        losses, tokens, trained = [], 0, 0
        for chunk in self.sampler.micro_batches(step):
            batch = self.collate([self.rows[i] for i in chunk])
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            trained += trained_tokens(batch["labels"])
            loss = example_losses(model, send_to_device(batch, self.device))
            with warnings.catch_warnings():  # torch notes that the frozen embeddings' inputs need no gradient
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                loss.sum().backward()  # each row's own gradient lands in p.grad_sample (a list over micro-batches)
            losses.append(loss.detach())
        params = self.dp.params
        clipped = 0
        if losses:
            norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in self.dp.grad_samples], 1).norm(2, 1)
            clipped = int((norms > self.plan.max_grad_norm).sum())
            self.dp.clip_and_accumulate()  # p.summed_grad = sum of the clipped per-example gradients
        else:  # an empty draw still releases a noised (all-noise) gradient, and is accounted
            for p in params:
                p.summed_grad = torch.zeros_like(p)
        device = params[0].device
        self.dp.generator = torch.Generator(device).manual_seed(
            int(np.random.SeedSequence([self.sampler.secret, step, 1]).generate_state(1, np.uint64)[0] >> 1))
        self.dp.add_noise()  # p.grad = p.summed_grad + N(0, (sigma C)^2)
        with torch.no_grad():
            for p in params:
                p.grad /= self.plan.expected_batch
                p.grad_sample, p.summed_grad = None, None
        self.budget.step()
        grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        loss = float(torch.cat(losses).mean()) if losses else 0.0
        n = sum(len(x) for x in losses)
        return PrivateGrads(loss, grad_norm, n, clipped, tokens, trained)

    def epsilon(self) -> float:
        return self.budget.epsilon()

    def exhausted(self) -> bool:
        return self.budget.exhausted()

    def state_dict(self) -> dict:
        """The accountant's history and the sampling/noise secret: checkpoints hold it, so keep them private."""
        return {**self.budget.state_dict(), "secret": self.sampler.secret}

    def load_state_dict(self, state: dict) -> None:
        self.budget.load_state_dict(state)
        self.sampler.secret = state["secret"]

    def close(self) -> None:
        self.hooks.cleanup()
