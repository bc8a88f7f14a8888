"""What a route run records (RouteRun), and the pieces both routes describe themselves with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..recipe import Recipe

# peftkit's schedule names -> the transformers scheduler each one is (peftkit.training.optim builds the same)
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass(frozen=True)
class RouteRun:
    """What one run of one route measured. Per-step lists are indexed by step - 1."""

    route: str
    settings: dict              # {"matched": what must equal the other route's, "defaults": what each route chose}
    step_elapsed_s: list[float]  # cumulative training seconds at the end of each step
    step_tokens: list[int]       # non-pad tokens in each step
    step_trained_tokens: list[int]  # tokens carrying loss in each step
    step_loss: list[float | None]
    eval_loss: float
    peak_memory_mb: float
    wall_s: float                # process start to the end of eval (the bookkeeping after it is not counted)
    memory_kind: str             # rss_peak | cuda_max_memory_allocated
    trainable_params: int
    mean_example_tokens: float   # mean length of the training examples (for attention FLOPs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RouteRun:
        return cls(**d)


def examples_digest(rows) -> str:
    """sha256 over each example's input_ids and labels, in order: equal digests mean both routes train the very
    same tokens with the very same mask."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps([list(row["input_ids"]), row["labels"] if isinstance(row["labels"], int)
                             else list(row["labels"])]).encode())
    return h.hexdigest()


def canonical_base(path_or_id: str) -> str:
    """A local base folder as an absolute path (both routes name it the same way); a hub id unchanged."""
    path = Path(path_or_id)
    return str(path.resolve()) if path.exists() else path_or_id


def matched_train(recipe: Recipe) -> dict:
    """The optimisation settings both routes must share, in one vocabulary."""
    t = recipe.train
    return {
        "lr": t.lr, "max_steps": t.max_steps, "batch_size": t.batch_size, "grad_accum": t.grad_accum, "seed": t.seed,
        "schedule": SCHEDULES[t.schedule], "warmup_steps": min(t.warmup_steps, t.max_steps),
        "weight_decay": t.weight_decay, "max_grad_norm": t.max_grad_norm,
    }


def write_spec(path: Path, recipe: Recipe, workdir: Path, index: int) -> Path:
    path.write_text(json.dumps({"recipe": recipe.model_dump(mode="json"), "workdir": str(workdir), "index": index}))
    return path
