"""The errors a user can cause. Each renders as one line; the CLI prints it and exits non-zero."""

from __future__ import annotations

from dataclasses import dataclass


class PeftkitError(Exception):
    """A mistake in what the user gave us (recipe, data, paths, run directory). Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One invalid recipe key: where it is, what it got, what is wrong."""

    key: str
    message: str
    value: object = None
    has_value: bool = False

    def render(self) -> str:
        got = f" (got {self.value!r})" if self.has_value else ""
        return f"{self.key}: {self.message}{got}"


class RecipeError(PeftkitError):
    """Every problem found in one recipe, reported together."""

    def __init__(self, file: str | None, problems: list[Problem]):
        self.file = file
        self.problems = list(problems)
        where = f"{file}: " if file else ""
        super().__init__(where + "; ".join(p.render() for p in self.problems))


class DataError(PeftkitError):
    """A data file or row that cannot be used."""

    def __init__(self, file: str, message: str, row: int | None = None):
        self.file = file
        self.row = row
        self.message = message
        where = f"{file}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message}")


class RunDirError(PeftkitError):
    """A run directory that is missing, incomplete, or would be overwritten."""


class ModelError(PeftkitError):
    """A base model that cannot be found or loaded, or an adapter that does not match it."""


class PrivacyError(PeftkitError):
    """A private run (train.privacy) that would not keep its stated (epsilon, delta); refused before it trains."""


class TrainingAborted(PeftkitError):
    """Training stopped early (interrupt, non-finite loss); a checkpoint may be resumable."""

    exit_code = 3
