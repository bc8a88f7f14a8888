"""Poisson sampling, as DP-SGD's accountant assumes: at every step each training row joins the batch independently
with probability q = expected batch / rows, so batch sizes vary (and may be 0).

The draw of step k is a pure function of (secret, k), like the non-private sampler's batch k (training.batches), so
a resumed run draws exactly the rows the uninterrupted run would have drawn. The secret is drawn from the operating
system at the start of a run and kept only in its checkpoints, not from train.seed: subsampling amplifies privacy
only while nobody can tell which rows a step used, and the recipe (with its seed) is published beside the adapter.
"""

from __future__ import annotations

import secrets

import numpy as np


def fresh_secret() -> int:
    """A run's sampling and noise secret (63 random bits from the operating system)."""
    return secrets.randbits(63)


class PoissonBatches:
    def __init__(self, n: int, sample_rate: float, secret: int, *, batch_size: int):
        if n < 1:
            raise ValueError("no training examples")
        self.n, self.sample_rate, self.secret, self.batch_size = n, sample_rate, secret, batch_size

    def draw(self, step: int) -> list[int]:
        """Indices of the rows in step `step`'s batch (0-based step)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.secret, step]))
        return np.flatnonzero(rng.random(self.n) < self.sample_rate).tolist()

    def micro_batches(self, step: int) -> list[list[int]]:
        """The draw in pieces of at most batch_size rows (memory only: their clipped gradients are summed)."""
        rows = self.draw(step)
        return [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
