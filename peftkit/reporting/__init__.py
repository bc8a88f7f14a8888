"""See a run: its curves, eval, data and `auto` choices as one self-contained HTML page (`peftkit report`,
written by `peftkit train` as RUN/report.html) and the same plots for the dashboard (`peftkit ui`).
Reads run directories only (peftkit.rundir); matplotlib is the `report` extra."""

from .page import render, write_report
from .runs import RunView, find_runs, load_run

__all__ = ["RunView", "find_runs", "load_run", "render", "write_report"]
