"""prepare_data(recipe): the one way from a recipe to a tokenizer and tokenized examples, for every caller
(training, evaluation, merge check, both bench routes, `peftkit data`)."""

from __future__ import annotations

from typing import NamedTuple

from ..modeling.load import load_tokenizer
from ..recipe import Recipe
from .build import build_data
from .bundle import DataBundle
from .pad import ensure_pad_token


class Prepared(NamedTuple):
    tokenizer: object  # pad token set (never a stop token); give it to load_base, which grows embeddings if needed
    data: DataBundle


def prepare_data(recipe: Recipe, *, tokenizer=None, source_file: str | None = None) -> Prepared:
    """The base's tokenizer (or `tokenizer`, e.g. the one a run saved with its adapter) and the recipe's data:
    relative paths as peftkit.recipe.load resolved them (against the recipe's folder, once), data.seed or else
    train.seed, and a pad token set only after the data knows its stop tokens. `source_file` names the recipe
    in errors."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(recipe.model)
    data = build_data(recipe.data, tokenizer, seed=recipe.train.seed, task=recipe.model.task, source_file=source_file)
    ensure_pad_token(tokenizer, stop_token_ids=data.stop_token_ids)
    return Prepared(tokenizer, data)
