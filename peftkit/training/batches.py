"""Deterministic batch order: global micro-batch k of a run is a pure function of (seed, k), so a resumed run
sees exactly the batches the uninterrupted run would have seen, on any number of processes.

With `world` processes, process `rank` takes global micro-batches rank, rank + world, rank + 2*world, ...: one
optimizer step of W processes x grad_accum A consumes the same W*A micro-batches as one process with grad_accum
W*A, and a checkpoint's micro-batch count means the same thing whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class Batches(Sampler[list[int]]):
    """Endless shuffled index batches, reshuffled each epoch from seed + epoch; an epoch's last short batch is kept."""

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("no training examples")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = -(-n // batch_size)
        self.start = 0
        self._order: tuple[int, list[int]] | None = None

    def start_at(self, k: int) -> None:
        """Position at global micro-batch `k` (resume without collating the batches before it)."""
        self.start = k

    def batch(self, k: int) -> list[int]:
        """Indices of global micro-batch k."""
        epoch, j = divmod(k, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._order[1][j * self.batch_size : (j + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start + self.rank
        while True:
            yield self.batch(k)
            k += self.world
