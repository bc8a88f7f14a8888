"""What to change so a recipe fits a memory size: the cheapest levers first, each applied on top of the ones before
it and kept only when it lowers the estimate, until the plan fits. Every step is the KEY=VALUE overrides a user
pastes after the recipe (`peftkit train RECIPE <overrides>`), with the estimate they lead to.

Order (cheapest first): recompute on (slower steps, same result), a smaller micro-batch with more accumulation
(same effective batch), a shorter max_length (longer examples are truncated), chunked logits, 4-bit instead of
8-bit or 16-bit weights, a paged 8-bit optimizer (CUDA), a lower adapter rank (changes what is learned).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import PeftkitError
from ..recipe import Recipe
from ..recipe.schema.adapter import READ_BY
from .estimate import Estimate, with_overrides

MIN_LENGTH = 128
MIN_RANK = 4


@dataclass(frozen=True)
class Step:
    change: str  # in words
    overrides: tuple[str, ...]  # as typed on the command line
    peak_bytes: int  # the estimate with this step and every step before it
    fits: bool


def advise(recipe: Recipe, memory: int, estimate_of: Callable[[Recipe], Estimate]) -> tuple[Step, ...]:
    """Steps that bring `recipe` under `memory` bytes (the last one fits), or every step that helped when even all
    of them are not enough; () when it already fits. `estimate_of`: the planner for this base and device.
    A lever none of whose values fits alone takes its strongest value; once the steps fit, each is eased back to
    its mildest value that still fits together with the others."""
    current, est = recipe, estimate_of(recipe)
    chosen: list[tuple[str, tuple[str, ...]]] = []
    milder: list[list[tuple[str, tuple[str, ...]]]] = []  # per chosen step: its lever's milder values that helped
    for lever in LEVERS:
        if est.peak_bytes <= memory:
            break
        best, tried = None, []
        for change, overrides in lever(current, est):
            try:
                candidate = with_overrides(current, list(overrides))
            except PeftkitError:
                continue  # this base / method refuses the change (e.g. loha on 4-bit): not advice
            new = estimate_of(candidate)
            if new.peak_bytes >= est.peak_bytes:
                continue
            if best:
                tried.append(best[:2])
            best = (change, overrides, candidate, new)
            if new.peak_bytes <= memory:
                break  # the mildest value of this lever that fits
        if best:
            chosen.append(best[:2])
            milder.append(tried)
            current, est = best[2], best[3]
    if est.peak_bytes <= memory:
        chosen = _eased(recipe, memory, estimate_of, chosen, milder)
    return tuple(_cumulative(recipe, memory, estimate_of, chosen))


def _peak(recipe: Recipe, steps, estimate_of) -> int | None:
    try:
        return estimate_of(with_overrides(recipe, [o for _, overrides in steps for o in overrides])).peak_bytes
    except PeftkitError:
        return None


def _eased(recipe, memory, estimate_of, chosen, milder):
    for i, alternatives in enumerate(milder):
        for alt in alternatives:  # mildest first
            trial = [*chosen[:i], alt, *chosen[i + 1:]]
            peak = _peak(recipe, trial, estimate_of)
            if peak is not None and peak <= memory:
                chosen = trial
                break
    return chosen


def _cumulative(recipe, memory, estimate_of, chosen) -> list[Step]:
    steps, previous = [], estimate_of(recipe).peak_bytes
    for i, (change, overrides) in enumerate(chosen):
        peak = _peak(recipe, chosen[: i + 1], estimate_of)
        if peak is None or peak >= previous:
            continue  # eased values can make an earlier step no longer needed at this point: keep only helpers
        steps.append(Step(change, overrides, peak, peak <= memory))
        previous = peak
    return steps


Lever = Callable[[Recipe, Estimate], Iterator[tuple[str, tuple[str, ...]]]]


def _recompute(r: Recipe, est: Estimate):
    if not est.settings.recompute:
        yield "recompute activations in the backward (gradient checkpointing): slower steps, same result", (
            "train.gradient_checkpointing=true",)


def _micro_batch(r: Recipe, est: Estimate):
    b, acc = r.train.batch_size, r.train.grad_accum
    if not isinstance(b, int):
        return  # batch_size auto: training measures the largest micro-batch that fits
    for smaller in (d for d in range(b - 1, 0, -1) if b % d == 0):
        yield (f"micro-batch {smaller} x {acc * b // smaller} accumulation steps (effective batch {b * acc} kept)",
               (f"train.batch_size={smaller}", f"train.grad_accum={acc * b // smaller}"))


def _max_length(r: Recipe, est: Estimate):
    length = r.data.max_length // 2
    while length >= MIN_LENGTH:
        yield f"max_length {length} (longer examples are truncated; `peftkit data stats` counts them)", (
            f"data.max_length={length}",)
        length //= 2


def _chunked_logits(r: Recipe, est: Estimate):
    if r.model.task == "causal_lm" and not est.settings.logits.startswith("chunked"):
        overrides = (() if r.train.selective_logits else ("train.selective_logits=true",)) + (
            () if r.train.logits_chunk else ("train.logits_chunk=256",))
        if overrides:
            yield "project to the vocabulary 256 trained positions at a time", overrides


def _four_bit(r: Recipe, est: Estimate):
    bits = r.model.quantization.bits
    if bits == 8:
        yield "load the base in 4-bit NF4 instead of 8-bit", ("model.quantization.bits=4",)
    elif bits is None:  # the whole section: a recipe may spell it `quantization: none`, which takes no sub-key
        yield "load the base in 4-bit NF4 (QLoRA)", ("model.quantization={bits: 4}",)


def _paged_optimizer(r: Recipe, est: Estimate):
    if est.settings.device == "cuda" and r.train.optimizer != "paged_adamw_8bit":
        yield "paged 8-bit AdamW (bitsandbytes): 8-bit state that pages to host memory under pressure", (
            "train.optimizer=paged_adamw_8bit",)


def _rank(r: Recipe, est: Estimate):
    if r.adapter.method not in READ_BY["rank"]:
        return
    rank = r.adapter.rank // 2
    while rank >= MIN_RANK:
        yield f"adapter rank {rank} (fewer trained parameters; learns less)", (f"adapter.rank={rank}",)
        rank //= 2


LEVERS: tuple[Lever, ...] = (_recompute, _micro_batch, _max_length, _chunked_logits, _four_bit, _paged_optimizer, _rank)
