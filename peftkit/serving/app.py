"""The OpenAI-compatible HTTP API over a ModelPool and its Batcher (FastAPI; uvicorn runs it).

GET  /health                      status, models, queue (no key needed)
GET  /v1/models[/{id}]            the base and one model per loaded run
POST /v1/chat/completions         the run's chat template and stop tokens; stream (SSE) or not; n, stop, seed, ...
POST /v1/completions              raw prompt text
POST /v1/adapters                 {"path": RUN_DIR, "name": optional}: load a run on the same base
DELETE /v1/adapters/{name}        unload it

Every refusal is a 4xx in OpenAI's error shape; nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import ModelError, PeftkitError, RunDirError
from .batcher import Batcher, Event, Job, Sampling
from .pool import ModelPool, RequestProblem
from .protocol import (AdapterRequest, ChatRequest, CompletionRequest, GenerationRequest, error_body, model_card,
                       new_id, now, usage)


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024          # the most one choice may ask for
    default_max_tokens: int = 256   # when a request does not say
    max_body_bytes: int = 1 << 20
    max_concurrent: int = 64        # requests being answered at once; more get 429
    max_n: int = 8                  # completions per request (n x prompts)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type=type, param=param, code=code)


class _Gate:
    """Counts requests in progress (the event loop is single-threaded: a plain counter is enough)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def enter(self) -> None:
        if self.count >= self.limit:
            raise ApiError(429, f"too many requests in progress ({self.limit}); retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded")
        self.count += 1

    def leave(self) -> None:
        self.count -= 1


def create_app(pool: ModelPool, batcher: Batcher, *, api_key: str | None = None, limits: Limits = Limits()) -> FastAPI:
    gate = _Gate(limits.max_concurrent)
    created = now()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(batcher.close)  # uvicorn has let in-flight requests finish; the queue is empty

    app = FastAPI(title="peftkit serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return JSONResponse(error_body(_first_problem(exc.errors())), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", type="server_error"),
                            status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": pool.names(), "in_flight": gate.count, "queued": batcher.pending()}

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [_card(pool, n, created) for n in pool.names()]}

    @v1.get("/models/{name:path}")
    async def model(name: str):
        _served(pool, name)
        return _card(pool, name, created)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        body = await _read(request, ChatRequest, limits)
        served = _served(pool, body.model)
        try:
            prompt = pool.chat_prompt(served, body.conversation())
        except (RequestProblem, ValueError) as exc:
            raise ApiError(400, str(exc), param="messages") from None
        return await _answer(body, [prompt], chat=True)

    @v1.post("/completions")
    async def completions(request: Request):
        body = await _read(request, CompletionRequest, limits)
        served = _served(pool, body.model)
        try:
            prompts = [pool.text_prompt(served, p) for p in body.prompts()]
        except RequestProblem as exc:
            raise ApiError(400, str(exc), param="prompt") from None
        if not prompts:
            raise ApiError(400, "prompt is an empty list", param="prompt")
        return await _answer(body, prompts, chat=False)

    @v1.post("/adapters")
    async def load_adapter(request: Request):
        body = await _read(request, AdapterRequest, limits)
        try:
            served = await asyncio.to_thread(pool.add_run, body.path, body.name)
        except RequestProblem as exc:
            raise ApiError(409, str(exc), param="name", code="name_taken") from None
        except ModelError as exc:
            raise ApiError(400, str(exc), param="path", code="base_mismatch") from None
        except (RunDirError, PeftkitError) as exc:
            raise ApiError(400, str(exc), param="path", code="invalid_run") from None
        return _card(pool, served.name, now())

    @v1.delete("/adapters/{name:path}")
    async def unload_adapter(name: str):
        _served(pool, name)
        try:
            await asyncio.to_thread(pool.remove, name)
        except RequestProblem as exc:
            raise ApiError(400, str(exc), param="name") from None
        return {"id": name, "object": "model", "deleted": True}

    async def _answer(body: GenerationRequest, prompts: list[list[int]], *, chat: bool):
        wanted = body.wanted_tokens() or _default_tokens(prompts, pool, limits)
        _check_sizes(body, prompts, wanted, pool, limits)
        gate.enter()
        try:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            served = pool.get(body.model)
            jobs = []
            for p, prompt in enumerate(prompts):
                for i in range(body.n):
                    index = p * body.n + i
                    seed = None if body.seed is None else body.seed + i
                    sampling = Sampling(wanted, body.temperature, body.top_p, seed, body.stops())
                    emit = (lambda ev, index=index: loop.call_soon_threadsafe(events.put_nowait, (index, ev)))
                    jobs.append(Job(body.model, prompt, sampling, served.stop_ids, emit))
            try:
                batcher.submit(jobs)
            except RuntimeError as exc:
                raise ApiError(503, str(exc), type="server_error") from None
        except BaseException:
            gate.leave()
            raise
        reply = _Reply(body, prompts, jobs, events, chat=chat)
        if body.stream:
            return StreamingResponse(reply.stream(gate), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            return await reply.whole()
        finally:
            for job in jobs:
                job.cancelled.set()
            gate.leave()

    app.include_router(v1)
    return app


class _Reply:
    """One request's choices as they arrive from the batcher: gathered whole, or streamed as SSE chunks."""

    def __init__(self, body: GenerationRequest, prompts: list[list[int]], jobs: list[Job], events: asyncio.Queue,
                 *, chat: bool) -> None:
        self.body, self.prompts, self.jobs, self.events, self.chat = body, prompts, jobs, events, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.object = "chat.completion" if chat else "text_completion"
        self.prompt_tokens = sum(len(p) for p in prompts)

    async def _events(self) -> AsyncIterator[tuple[int, Event]]:
        open_ = len(self.jobs)
        while open_:
            index, event = await self.events.get()
            if event.kind in ("done", "error"):
                open_ -= 1
            yield index, event

    async def whole(self) -> JSONResponse:
        texts = [""] * len(self.jobs)
        finish: list[str | None] = [None] * len(self.jobs)
        completion = 0
        async for index, event in self._events():
            if event.kind == "error":
                raise ApiError(500, event.text, type="server_error")
            if event.kind == "text":
                texts[index] += event.text
            else:
                finish[index] = event.finish_reason
                completion += event.completion_tokens
        choices = []
        for index, (text, reason) in enumerate(zip(texts, finish)):
            if self.chat:
                choices.append({"index": index, "message": {"role": "assistant", "content": text},
                                "finish_reason": reason, "logprobs": None})
            else:
                if getattr(self.body, "echo", False):
                    text = self.body.prompts()[index // self.body.n] + text
                choices.append({"index": index, "text": text, "finish_reason": reason, "logprobs": None})
        return JSONResponse({"id": self.id, "object": self.object, "created": self.created, "model": self.body.model,
                             "choices": choices, "usage": usage(self.prompt_tokens, completion),
                             "system_fingerprint": None})

    def _chunk(self, choices: list[dict], **extra) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        data = {"id": self.id, "object": obj, "created": self.created, "model": self.body.model,
                "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n"

    def _piece(self, index: int, text: str | None, reason: str | None, *, role: bool = False) -> dict:
        if not self.chat:
            return {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}

    async def stream(self, gate: _Gate) -> AsyncIterator[str]:
        completion = 0
        try:
            if self.chat:
                yield self._chunk([self._piece(i, None, None, role=True) for i in range(len(self.jobs))])
            elif getattr(self.body, "echo", False):
                yield self._chunk([self._piece(i, self.body.prompts()[i // self.body.n], None)
                                   for i in range(len(self.jobs))])
            async for index, event in self._events():
                if event.kind == "error":
                    yield f"data: {json.dumps(error_body(event.text, type='server_error'))}\n\n"
                elif event.kind == "text":
                    yield self._chunk([self._piece(index, event.text, None)])
                elif event.finish_reason != "cancelled":
                    completion += event.completion_tokens
                    yield self._chunk([self._piece(index, None, event.finish_reason)])
            if self.body.usage_in_stream():
                yield self._chunk([], usage=usage(self.prompt_tokens, completion))
            yield "data: [DONE]\n\n"
        finally:  # also when the client went away mid-stream: its rows stop at their next token
            for job in self.jobs:
                job.cancelled.set()
            gate.leave()


def _card(pool: ModelPool, name: str, created: int) -> dict:
    served = pool.get(name)
    return model_card(name, created, root=str(served.run) if served.run else pool.recipe.model.base)


def _served(pool: ModelPool, name: str):
    try:
        return pool.get(name)
    except RequestProblem as exc:
        raise ApiError(404, str(exc), param="model", code="model_not_found") from None


async def _read(request: Request, kind: type, limits: Limits):
    """The body, at most max_body_bytes, parsed into `kind`; anything else is a 400 (413 when too large)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors()
        param = ".".join(str(x) for x in problems[0]["loc"]) if problems else None
        raise ApiError(400, _first_problem(problems), param=param) from None


def _first_problem(problems) -> str:
    if not problems:
        return "invalid request"
    p = problems[0]
    where = ".".join(str(x) for x in p.get("loc", ()) if x != "body")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {p.get('msg', 'invalid')}{more}"


def _default_tokens(prompts: list[list[int]], pool: ModelPool, limits: Limits) -> int:
    """max_tokens unset: the server's default, or what is left of the model's context when that is less."""
    room = (pool.max_positions - max(len(p) for p in prompts)) if pool.max_positions else limits.default_max_tokens
    return max(1, min(limits.default_max_tokens, room))


def _check_sizes(body: GenerationRequest, prompts: list[list[int]], wanted: int, pool: ModelPool,
                 limits: Limits) -> None:
    if body.n * len(prompts) > limits.max_n:  # each prompt of a list is answered n times
        raise ApiError(400, f"{body.n * len(prompts)} completions asked (n x prompts); this server allows at most "
                       f"{limits.max_n} per request", param="n")
    if wanted > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {wanted}; this server allows at most {limits.max_tokens}",
                       param="max_tokens")
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt_tokens:
        raise ApiError(400, f"the prompt has {longest} tokens; this server allows at most {limits.max_prompt_tokens}",
                       param="messages", code="context_length_exceeded")
    if pool.max_positions and longest + wanted > pool.max_positions:
        raise ApiError(400, f"the model's context is {pool.max_positions} tokens; the prompt ({longest}) plus "
                       f"max_tokens ({wanted}) exceed it", param="max_tokens", code="context_length_exceeded")
