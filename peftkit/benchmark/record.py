"""What a route run records (RouteRun), and the pieces both routes describe themselves with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.bundle import sequences
from ..modeling.tokens import IGNORE_INDEX
from ..recipe import Recipe
from ..recipe.schema.train import PREFERENCE_READ_BY, REFERENCE_OBJECTIVES

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
    eval_metrics: dict = field(default_factory=dict)  # preference runs: loss, rewards_*, reward_margin, accuracies

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


def answer_ids(seq: dict, prompt_len: int) -> list[int]:
    """The trained answer of one preference sequence: its ids from the end of the prompt through its last trained
    token. What follows (the chat template's newline after the end-of-turn) carries no loss and, being after it,
    cannot change its log-probabilities, so a peer that trains every completion token gets exactly this span.
    Raises ValueError when the span is not all trained: then no prompt/completion split reproduces the labels."""
    labels = seq["labels"]
    last = max(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    ids = list(seq["input_ids"][prompt_len : last + 1])
    if list(labels[prompt_len : last + 1]) != ids or any(x != IGNORE_INDEX for x in labels[:prompt_len]):
        raise ValueError("a preference sequence's trained tokens are not one span right after its prompt")
    return ids


def preference_parts(row: dict) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, the trained answers' ids) of a pair (chosen, rejected) or of an unpaired row (its one answer)."""
    cut = row["prompt_len"]
    seqs = sequences(row)
    return list(seqs[0]["input_ids"][:cut]), [answer_ids(s, cut) for s in seqs]


def preference_digest(rows) -> str:
    """sha256 over each row's prompt ids and trained answers (and an unpaired row's label), in order: what a
    preference peer must train on, whichever way it splits and pads the sequences."""
    h = hashlib.sha256()
    for row in rows:
        prompt, answers = preference_parts(row)
        h.update(json.dumps([prompt, answers, row.get("desirable")]).encode())
    return h.hexdigest()


def mean_sequence_tokens(rows) -> float:
    """Mean length of the sequences the model reads (both answers of a pair, each with its prompt)."""
    lengths = [len(s["input_ids"]) for row in rows for s in sequences(row)]
    return sum(lengths) / max(len(lengths), 1)


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


def matched_preference(recipe: Recipe, reference: str) -> dict | None:
    """The preference objective and the keys it reads, in peftkit's vocabulary, and where its reference log-probs
    come from (adapter_off | precomputed | none); None for sft."""
    t = recipe.train
    if t.objective == "sft":
        return None
    out = {"objective": t.objective, "beta": t.preference.beta_for(t.objective)}
    out.update({key: getattr(t.preference, key) for key, readers in PREFERENCE_READ_BY.items()
                if key != "beta" and t.objective in readers})
    out["reference"] = reference if t.objective in REFERENCE_OBJECTIVES else "none"
    return out


def expected_reference(recipe: Recipe) -> str:
    """The reference a comparable recipe runs with: precomputed when asked, else the adapter switched off (a fresh
    LoRA-family adapter starts as the base, so `auto` picks that; peer.py refuses adapter.init_from)."""
    return "precomputed" if recipe.train.precompute_ref is True else "adapter_off"


def write_spec(path: Path, recipe: Recipe, workdir: Path, index: int) -> Path:
    path.write_text(json.dumps({"recipe": recipe.model_dump(mode="json"), "workdir": str(workdir), "index": index}))
    return path
