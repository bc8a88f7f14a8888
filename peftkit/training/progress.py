"""A progress bar with loss, lr and tokens/s; plain log lines when output is not a terminal (CI, pipes)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .loop import StepLog


class TrainProgress:
    def __init__(self, total: int, console: Console, *, log_every: int, start: int = 0):
        self.console, self.total, self.log_every = console, total, log_every
        self.live = console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=console, transient=False,
        ) if self.live else None
        self.task = self.bar.add_task("train", total=total, completed=start, info="") if self.bar else None

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, log: StepLog) -> None:
        tps = log.tokens / max(log.elapsed_s, 1e-9)
        info = f"loss {log.loss:.4f}  lr {log.lr:.2e}  {tps:,.0f} tok/s"
        if "reward_margin" in log.stats:  # preference objectives
            info += f"  margin {log.stats['reward_margin']:.3f}  reward acc {log.stats['reward_accuracy']:.2f}"
        if log.epsilon is not None:  # train.privacy: spent so far
            info += f"  epsilon {log.epsilon:.3f}"
        if self.bar:
            self.bar.update(self.task, completed=log.step, info=info)
        elif log.step % self.log_every == 0 or log.step in (1, self.total):
            self.console.print(f"step {log.step}/{self.total}  {info}", highlight=False)
