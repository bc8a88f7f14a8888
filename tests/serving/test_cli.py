"""`peftkit serve` as a user starts it: its own process, a key, the openai client, then Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx2 as httpx
from openai import OpenAI

from peftkit.serving.server import free_port


def test_serve_command_answers_and_stops_on_ctrl_c(runs):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "peftkit", "serve", str(runs["adder"]), str(runs["counter"]),
                             "--port", str(port), "--api-key", "sk-cli"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        assert [m.id for m in client.models.list()] == ["base", "adder", "counter"]
        reply = client.chat.completions.create(model="counter", messages=[{"role": "user", "content": "count 2"}],
                                               temperature=0, max_tokens=4)
        assert reply.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"serving base, adder, counter on http://127.0.0.1:{port}/v1 (API key required)" in err
