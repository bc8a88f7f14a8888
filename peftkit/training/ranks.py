"""Which process this is among a run's processes (DDP under accelerate launch / torchrun), and a barrier. The main
process alone writes the run directory and checkpoints; the others wait for it."""

from __future__ import annotations


class Ranks:
    """Who this process is among the run's processes, and a barrier; one process by default."""

    def __init__(self, accelerator=None):
        self.rank = accelerator.process_index if accelerator else 0
        self.main = self.rank == 0
        self._acc = accelerator if accelerator and accelerator.num_processes > 1 else None

    def wait(self) -> None:
        if self._acc is not None:
            self._acc.wait_for_everyone()
