"""Batched greedy generation from tokenized prompts (left padding, original order kept)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate.utils import send_to_device
from transformers import GenerationConfig

from peftkit.errors import PeftkitError


def generate_batched(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop_token_ids: Sequence[int],
    device: torch.device | None = None,
) -> list[str]:
    """Greedy completions of `prompts`, one string per prompt, in the order given.

    Prompts are token ids already rendered with the run's chat template (the data pipeline
    does that, so generation sees exactly what training saw). They are sorted by length and
    batched with left padding, so every row's last real token sits at the end and the new
    tokens line up; the attention mask hides the padding. Each completion is cut at its first
    stop token and decoded without special tokens. Works on plain and PEFT-wrapped causal LMs;
    the model's train/eval mode is restored afterwards. Inputs go to `device` (default: the model's first
    parameter's).
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise PeftkitError(f"prompt {index} has no tokens: nothing to generate from")
    stops = set(stop_token_ids)
    pad_id = pad_id_for(tokenizer, stops)
    config = generation_config(max_new_tokens=max_new_tokens, stop_token_ids=stops, pad_id=pad_id)
    device = device if device is not None else next(model.parameters()).device
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory shows at once.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    completions: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                input_ids, attention_mask = left_pad([prompts[i] for i in batch], pad_id, device)
                output = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config
                )
                new_tokens = output[:, input_ids.shape[1] :].tolist()
                for index, tokens in zip(batch, new_tokens):
                    completions[index] = tokenizer.decode(_cut(tokens, stops), skip_special_tokens=True)
    finally:
        model.train(was_training)
    return completions


def generation_config(
    *, max_new_tokens: int, stop_token_ids, pad_id: int, temperature: float = 0.0, top_p: float = 1.0,
) -> GenerationConfig:
    """Greedy (temperature 0) or plain temperature / nucleus sampling, with every other knob pinned: unset values
    are filled from the model's own generation_config, and a repetition penalty, n-gram ban or top-k there would
    make the same request answer differently per base. `peftkit eval` and `peftkit serve` both generate with it."""
    sampled = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        temperature=temperature if sampled else None,
        top_p=top_p if sampled else None,
        top_k=0 if sampled else None,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        pad_token_id=pad_id,
        # A list, never None: None would be filled in from the model's generation_config, and the model's eos
        # would then end completions the caller did not ask to stop.
        eos_token_id=sorted(set(stop_token_ids)),
    )


def pad_id_for(tokenizer, stops: set[int]) -> int:
    """The tokenizer's pad id, or else the smallest id that is not a stop token.

    Any id works under a zero attention mask; it only must not be a stop token, or a padded
    position could be mistaken for the end of a completion.
    """
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in stops:
        return pad
    return next(i for i in range(len(stops) + 1) if i not in stops)


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row) :] = 1
    return send_to_device((ids, mask), device)


def _cut(tokens: list[int], stops: set[int]) -> list[int]:
    """Tokens before the first stop token (generate pads finished rows after it)."""
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens
