"""Deterministic batch order: micro-batch k of a run is a pure function of (seed, k), so a resumed run sees
exactly the batches the uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Shuffled index batches, reshuffled each epoch from seed + epoch; the last short batch is kept."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.epoch, self.skip = n, batch_size, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Position at `epoch`, leaving out its first `skip` batches (resume mid-epoch without collating them)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for i in range(self.skip * self.batch_size, self.n, self.batch_size):
            yield order[i : i + self.batch_size]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def endless(loader, sampler: EpochBatches, start: int = 0) -> Iterator[tuple[int, dict]]:
    """Yields (micro-batch index, batch) forever, starting at micro-batch `start`."""
    per_epoch = len(sampler)
    epoch, skip = divmod(start, per_epoch)
    k = start
    while True:
        sampler.set_epoch(epoch, skip)
        for batch in loader:
            yield k, batch
            k += 1
        epoch, skip = epoch + 1, 0
