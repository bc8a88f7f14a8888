"""`peftkit chat`: talk to a run's adapter in the terminal, with its training chat template and stop tokens.

Answers stream token by token through the same Batcher the server uses. Slash commands:
  /adapter [NAME]   switch to another loaded model (base or a run); without NAME, list them
  /compare [TEXT]   every loaded model answers the same turn (TEXT, or the last one), side by side
  /system [TEXT]    set (or clear) the system prompt
  /reset            forget the conversation
  /save FILE        append the conversation to FILE as one chat-JSONL row ({"messages": [...]}), ready to train on
  /help, /quit      (also: quit, exit, Ctrl-D)
"""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .batcher import Batcher, Job, Sampling
from .pool import ModelPool, RequestProblem

HELP = __doc__.split("Slash commands:\n", 1)[1].rstrip()
QUIT = {"/quit", "/exit", "quit", "exit"}


@dataclass
class ChatSession:
    """The conversation and the chat's settings; commands and turns change it."""

    pool: ModelPool
    batcher: Batcher
    model: str
    sampling: Sampling
    system: str | None = None
    compare: tuple[str, ...] = ()  # models that answer every turn beside the current one (--compare)
    history: list[dict] = field(default_factory=list)

    def messages(self, extra: list[dict] = ()) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history + list(extra)

    def jobs(self, models: list[str], messages: list[dict], sink: queue.Queue) -> list[Job]:
        out = []
        for i, name in enumerate(models):
            served = self.pool.get(name)
            prompt = self.pool.chat_prompt(served, messages)
            out.append(Job(name, prompt, self.sampling, served.stop_ids, emit=lambda ev, i=i: sink.put((i, ev))))
        return out


def chat_loop(session: ChatSession, console: Console, read=None) -> int:
    """Read a line, answer it (or run its command), until quit. `read(prompt)` defaults to console.input."""
    read = read or (lambda prompt: console.input(prompt))
    console.print(f"chatting with [bold]{session.model}[/] (models: {', '.join(session.pool.names())}); "
                  "/help for commands", highlight=False)
    while True:
        try:
            line = read(f"[bold green]you ({session.model})>[/] ")
        except EOFError:
            console.print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text in QUIT:
            return 0
        try:
            if text.startswith("/"):
                _command(session, console, text)
            elif session.compare:
                _compare(session, console, text, keep=True, models=[session.model, *session.compare])
            else:
                _turn(session, console, text)
        except RequestProblem as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)


def _command(session: ChatSession, console: Console, text: str) -> None:
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name == "/help":
        console.print(HELP, highlight=False, markup=False)
    elif name == "/adapter":
        if not arg:
            console.print("models: " + ", ".join(session.pool.names()), highlight=False)
            return
        session.pool.get(arg)  # refuses an unknown name, listing the served ones
        session.model = arg
        console.print(f"now chatting with {arg}", highlight=False)
    elif name == "/compare":
        if arg:
            _compare(session, console, arg, keep=True)
        elif session.history and session.history[-1]["role"] == "assistant":
            last_user = session.history[-2]["content"]
            _compare(session, console, last_user, keep=False, context=session.history[:-2])
        else:
            console.print("nothing to compare yet: /compare TEXT, or say something first", highlight=False)
    elif name == "/system":
        session.system = arg or None
        console.print(f"system prompt: {arg!r}" if arg else "system prompt cleared", highlight=False)
    elif name == "/reset":
        session.history.clear()
        console.print("conversation cleared", highlight=False)
    elif name == "/save":
        if not arg:
            raise RequestProblem("/save FILE")
        path = Path(arg).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"messages": session.messages()}, ensure_ascii=False) + "\n")
        console.print(f"saved {len(session.history)} turns to {path}", highlight=False)
    else:
        console.print(f"unknown command {name}; /help lists them", highlight=False)


def _turn(session: ChatSession, console: Console, text: str) -> None:
    user = {"role": "user", "content": text}
    sink: queue.Queue = queue.Queue()
    jobs = session.jobs([session.model], session.messages([user]), sink)
    session.batcher.submit(jobs)
    console.print(f"[bold cyan]{session.model}>[/] ", end="", highlight=False)
    reply = ""
    try:
        for _, event in _drain(sink, 1):
            if event.kind == "text":
                reply += event.text
                console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
            elif event.kind == "error":
                console.print(f"\n[red]error:[/] {event.text}", highlight=False)
                return
    except KeyboardInterrupt:  # stop this answer, keep the chat
        jobs[0].cancelled.set()
        console.print(" [dim](stopped)[/]", end="")
    console.print()
    session.history += [user, {"role": "assistant", "content": reply}]


def _compare(session: ChatSession, console: Console, text: str, *, keep: bool, context: list[dict] | None = None,
             models: list[str] | None = None) -> None:
    """`models` (default: the current one, then every other loaded one) answer `text` after the same
    conversation, in one mixed-adapter batch."""
    user = {"role": "user", "content": text}
    head = [{"role": "system", "content": session.system}] if session.system else []
    messages = head + (session.history if context is None else context) + [user]
    models = models or [session.model] + [m for m in session.pool.names() if m != session.model]
    sink: queue.Queue = queue.Queue()
    session.batcher.submit(session.jobs(models, messages, sink))
    replies = [""] * len(models)
    with console.status("answering with " + ", ".join(models)):
        for index, event in _drain(sink, len(models)):
            if event.kind == "text":
                replies[index] += event.text
            elif event.kind == "error":
                replies[index] = f"(error: {event.text})"
    table = Table(show_lines=True)
    for name in models:
        table.add_column(name + (" *" if name == session.model else ""), overflow="fold")
    table.add_row(*replies)
    console.print(table)
    if keep:  # the conversation goes on with the current model's answer
        session.history += [user, {"role": "assistant", "content": replies[0]}]


def _drain(sink: queue.Queue, jobs: int):
    open_ = jobs
    while open_:
        index, event = sink.get()
        if event.kind in ("done", "error"):
            open_ -= 1
        yield index, event


def chat(targets: list[str], *, console: Console, system: str | None = None, compare: tuple[str, ...] = (),
         temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 256, seed: int | None = None,
         read=None) -> int:
    """`peftkit chat TARGET...`: the first run's adapter answers (a recipe alone: its base), the others are loaded
    beside it for /adapter and /compare."""
    from .pool import open_pool

    with console.status("loading " + ", ".join(targets)):
        pool = open_pool(targets)
    names = pool.names()
    start = names[1] if len(names) > 1 else names[0]
    for name in compare:
        pool.get(name)  # an unknown name is refused before the chat starts
    compare = tuple(n for n in compare if n != start)
    batcher = Batcher(pool).start()
    session = ChatSession(pool, batcher, start, Sampling(max_new_tokens, temperature, top_p, seed), system=system,
                          compare=tuple(compare))
    try:
        return chat_loop(session, console, read)
    finally:
        batcher.close(timeout=5)

