"""One worker thread that answers generation jobs in batches.

Jobs that can share a generate call (the same sampling settings and stop tokens; LoRA adapters and the base mix in
one batch through PEFT's `adapter_names=`) are taken together, oldest first, up to `max_batch`; the oldest waiting
job always leads the next batch, so no model starves behind a busy one. Where PEFT cannot mix adapters (non-LoRA
methods) a batch holds one adapter's jobs. Each row is cut at its own stop tokens, stop strings and max_tokens,
and its text is streamed to its own callback as it grows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..evaluation.generate import generation_config, left_pad, pad_id_for
from .pool import ModelPool


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings; the stop tokens come from the model's template


@dataclass(frozen=True)
class Event:
    kind: str  # "text" (a new piece of the completion), "done" or "error"
    text: str = ""
    finish_reason: str | None = None  # done: "stop" or "length"
    completion_tokens: int = 0


@dataclass(eq=False)
class Job:
    """One completion: a model, a prompt, how to sample, and where its events go (called from the worker)."""

    model: str
    prompt_ids: list[int]
    sampling: Sampling
    stop_ids: tuple[int, ...]
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def key(self) -> tuple:
        """Jobs with equal keys may share a generate call."""
        s = self.sampling
        if s.temperature <= 0:
            mode: tuple = ("greedy",)
        elif s.seed is None:
            mode = ("sample", s.temperature, s.top_p)
        else:  # a seeded sample runs alone: its result may not depend on its neighbours
            mode = ("seeded", id(self))
        return (*mode, tuple(sorted(self.stop_ids)))


class _Row:
    """A job's decoding state inside a batch: tokens so far, text sent, why it ended."""

    def __init__(self, job: Job, tokenizer) -> None:
        self.job, self.tokenizer = job, tokenizer
        self.tokens: list[int] = []
        self.sent = 0
        self.finish: str | None = None
        self.holdback = max((len(s) for s in job.sampling.stop), default=1) - 1

    def feed(self, token: int) -> None:
        if self.finish is not None:
            return
        if self.job.cancelled.is_set():
            self.finish = "cancelled"
            return
        if token in self.job.stop_ids:
            self._end("stop")
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        hits = [at for at in (text.find(s) for s in self.job.sampling.stop if s) if at >= 0]
        if hits:
            self._send(text[: min(hits)], final=True)
            self._end("stop")
        elif len(self.tokens) >= self.job.sampling.max_tokens:
            self._send(text, final=True)
            self._end("length")
        else:
            self._send(text, final=False)

    def _send(self, text: str, *, final: bool) -> None:
        upto = len(text) if final else len(text) - self.holdback
        if not final and text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            upto = min(upto, len(text) - 1)
        if upto > self.sent:
            self.job.emit(Event("text", text[self.sent : upto]))
            self.sent = upto

    def _end(self, reason: str) -> None:
        if reason == "stop" and self.finish is None:  # text held back for a stop string that never came
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
            hits = [at for at in (text.find(s) for s in self.job.sampling.stop if s) if at >= 0]
            self._send(text[: min(hits)] if hits else text, final=True)
        self.finish = reason
        self.job.emit(Event("done", finish_reason=reason, completion_tokens=len(self.tokens)))

    def close(self) -> None:
        """generate ended without this row finishing (every other row's limit reached first cannot happen, but a
        model's own length limit can): what is left is sent as a length stop."""
        if self.finish is None:
            self._send(self.tokenizer.decode(self.tokens, skip_special_tokens=True), final=True)
            self._end("length")


class _Streamer(BaseStreamer):
    """generate() hands over each step's new token per row; the first call is the prompt."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows, self.prompt_seen = rows, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            row.feed(int(token))

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([r.finish is not None for r in self.rows], dtype=torch.bool, device=input_ids.device)


class Batcher:
    """Start it, submit jobs from any thread, close it to finish what is queued and stop."""

    def __init__(self, pool: ModelPool, *, max_batch: int = 16) -> None:
        self.pool, self.max_batch = pool, max(1, max_batch)
        self._queue: list[Job] = []
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="peftkit-batcher", daemon=True)
        self.batches = 0  # generate calls made; rows / batches is the mean batch size
        self.rows = 0

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def submit(self, jobs: list[Job]) -> None:
        with self._wake:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            self._queue.extend(jobs)
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued job, then stop the worker."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    # ---- the worker

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[Job]:
        """The oldest job and those that can share its generate call, in arrival order."""
        live = []
        for job in self._queue:
            if job.cancelled.is_set():
                job.emit(Event("done", finish_reason="cancelled"))
            elif not self.pool.has(job.model):  # unloaded while the job waited
                job.emit(Event("error", text=f"the model `{job.model}` was unloaded"))
            else:
                live.append(job)
        first = live[0] if live else None
        batch: list[Job] = []
        for job in live:
            if len(batch) >= self.max_batch:
                break
            if job.key() != first.key():
                continue
            models = {first.model, job.model}
            if job.model != first.model and not self.pool.can_mix(sorted(models)):
                continue
            batch.append(job)
        self._queue = [j for j in live if j not in batch]
        return batch

    def _run(self, batch: list[Job]) -> None:
        if not batch:
            return
        pool = self.pool
        rows = [_Row(job, pool.tokenizer) for job in batch]
        self.batches += 1  # counted before any answer goes out: a caller that got its answer sees its batch
        self.rows += len(batch)
        try:
            with pool.lock, torch.inference_mode():
                gone = [r for r in rows if not pool.has(r.job.model)]  # unloaded after the batch was taken
                for row in gone:
                    row.finish = "error"
                    row.job.emit(Event("error", text=f"the model `{row.job.model}` was unloaded"))
                rows = [r for r in rows if r not in gone]
                if rows:
                    self._generate([r.job for r in rows], rows)
        except Exception as exc:  # one bad batch must not stop the server; its callers are told
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for row in rows:
                if row.finish is None:
                    row.finish = "error"
                    row.job.emit(Event("error", text=f"generation failed: {first}"))
            return
        for row in rows:
            row.close()

    def _generate(self, batch: list[Job], rows: list[_Row]) -> None:
        pool, model = self.pool, self.pool.model
        sampling = batch[0].sampling
        stops = set(batch[0].stop_ids)
        pad_id = pad_id_for(pool.tokenizer, stops)
        device = next(model.parameters()).device
        input_ids, attention_mask = left_pad([j.prompt_ids for j in batch], pad_id, device)
        config = generation_config(max_new_tokens=max(j.sampling.max_tokens for j in batch), stop_token_ids=stops,
                                   pad_id=pad_id, temperature=sampling.temperature, top_p=sampling.top_p)
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                      streamer=_Streamer(rows), stopping_criteria=StoppingCriteriaList([_RowsDone(rows)]))
        if sampling.temperature > 0 and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        models = [j.model for j in batch]
        if not hasattr(model, "peft_config"):  # no adapter loaded: only the base is served
            model.generate(**kwargs)
        elif len(set(models)) == 1 and pool.get(models[0]).adapter is None:
            with model.disable_adapter():
                model.generate(**kwargs)
        elif len(set(models)) == 1 and not pool.get(models[0]).lora:
            model.set_adapter(pool.get(models[0]).adapter)
            model.generate(**kwargs)
        else:
            model.generate(**kwargs, adapter_names=[pool.get(m).adapter or "__base__" for m in models])
