"""peftkit chat driven through a pseudo-terminal as a user would: a turn, /compare, /adapter, /save, quit."""

from __future__ import annotations

import json
import os
import queue
import sys

import pexpect
import pytest

from peftkit.serving.batcher import Batcher, Job, Sampling


def _greedy(pool, model: str, messages: list[dict], max_tokens: int) -> str:
    """What the chat should print: the pool's greedy answer (tests/serving/test_api checks it equals eval's)."""
    served, sink = pool.get(model), queue.Queue()
    batcher = Batcher(pool).start()
    try:
        batcher.submit([Job(model, pool.chat_prompt(served, messages), Sampling(max_tokens), served.stop_ids,
                            emit=sink.put)])
        text = ""
        while (event := sink.get()).kind == "text":
            text += event.text
        assert event.kind == "done"
        return text
    finally:
        batcher.close()


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_chat_in_a_terminal(pool, runs, tmp_path):
    first = [{"role": "user", "content": "add 3 and 4"}]
    adder = _greedy(pool, "adder", first, 8)
    second = first + [{"role": "assistant", "content": adder}, {"role": "user", "content": "add 1 and 2"}]
    counter = _greedy(pool, "counter", second, 8)
    assert adder.strip() and counter.strip()

    env = {**os.environ, "TERM": "dumb", "COLUMNS": "200", "NO_COLOR": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "peftkit", "chat", str(runs["adder"]), str(runs["counter"]),
                                           "--max-new-tokens", "8"], env=env, encoding="utf-8", timeout=90,
                          dimensions=(50, 200))
    try:
        child.expect_exact("you (adder)> ")
        child.sendline("add 3 and 4")
        child.expect_exact("adder> ")
        child.expect_exact("you (adder)> ")
        assert child.before.rstrip("\r\n") == adder.rstrip()

        child.sendline("/compare")
        child.expect_exact("you (adder)> ")
        table = child.before
        assert all(name in table for name in ("adder *", "base", "counter")), table
        assert adder.strip() in table

        child.sendline("/adapter nope")
        child.expect_exact("does not exist")
        child.sendline("/adapter counter")
        child.expect_exact("now chatting with counter")
        child.expect_exact("you (counter)> ")
        child.sendline("add 1 and 2")
        child.expect_exact("counter> ")
        child.expect_exact("you (counter)> ")
        assert child.before.rstrip("\r\n") == counter.rstrip()

        saved = tmp_path / "talk.jsonl"
        child.sendline(f"/save {saved}")
        child.expect_exact("saved 4 turns")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    (row,) = [json.loads(line) for line in saved.read_text().splitlines()]
    assert row == {"messages": second + [{"role": "assistant", "content": counter}]}


def test_compare_flag_system_reset_and_help(pool):
    """chat_loop in-process: --compare answers every turn side by side, /system and /reset change what is sent."""
    from rich.console import Console

    from peftkit.serving.chat import ChatSession, chat_loop

    batcher = Batcher(pool).start()
    lines = iter(["add 3 and 4", "/system Be brief.", "/reset", "/help", "/adapter", "/bogus", "quit"])
    console = Console(record=True, width=200, force_terminal=False)
    session = ChatSession(pool, batcher, "adder", Sampling(8), compare=("base",))
    try:
        assert chat_loop(session, console, read=lambda prompt: next(lines)) == 0
    finally:
        batcher.close()
    text = console.export_text()
    table_head = next(line for line in text.splitlines() if "adder *" in line)
    assert "base" in table_head and "counter" not in table_head  # only the models --compare named
    first = [{"role": "user", "content": "add 3 and 4"}]
    assert _greedy(pool, "adder", first, 8).strip() in text and _greedy(pool, "base", first, 8).strip()[:10] in text
    assert "system prompt: 'Be brief.'" in text and "conversation cleared" in text and "/save FILE" in text
    assert "models: base, adder, counter" in text and "unknown command /bogus" in text
    assert session.history == [] and session.messages() == [{"role": "system", "content": "Be brief."}]


def test_serve_refuses_a_public_host_without_a_key():
    from peftkit.errors import PeftkitError
    from peftkit.serving.server import serve

    with pytest.raises(PeftkitError, match="--api-key"):
        serve(["unused"], host="0.0.0.0")
