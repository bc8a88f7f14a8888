"""Running the API: `peftkit serve` in the foreground, or a server in a background thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from ..errors import PeftkitError
from .app import Limits, create_app
from .batcher import Batcher
from .pool import ModelPool, open_pool

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GRACE_S = 30  # how long a shutdown waits for requests in progress


def _config(pool: ModelPool, batcher: Batcher, *, host: str, port: int, api_key: str | None, limits: Limits,
            log_level: str) -> uvicorn.Config:
    app = create_app(pool, batcher, api_key=api_key, limits=limits)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACE_S,
                          limit_concurrency=limits.max_concurrent * 2 + 8)  # the gate answers 429 before this


def serve(targets: list[str], *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: Limits = Limits(), max_batch: int = 16, console=None) -> None:
    """Load the base and every run's adapter once, then answer until interrupted (Ctrl-C / SIGTERM finish the
    requests in progress first)."""
    if host not in LOCAL_HOSTS and not api_key:
        raise PeftkitError(f"--host {host} exposes the server beyond this machine; set --api-key as well")
    pool = open_pool(targets)
    batcher = Batcher(pool, max_batch=max_batch).start()
    if console is not None:
        console.print(f"serving {', '.join(pool.names())} on http://{host}:{port}/v1"
                      + (" (API key required)" if api_key else ""), highlight=False)
    try:
        uvicorn.Server(_config(pool, batcher, host=host, port=port, api_key=api_key, limits=limits,
                               log_level="info")).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down gracefully: a normal stop here
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Background:
    """A server on a thread: `url` is its /v1 base; stop() shuts it down as SIGTERM would."""

    server: uvicorn.Server
    thread: threading.Thread
    batcher: Batcher
    url: str

    def stop(self, timeout: float = GRACE_S + 5) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_background(pool: ModelPool, *, api_key: str | None = None, limits: Limits = Limits(), max_batch: int = 16,
                     host: str = "127.0.0.1", port: int | None = None) -> Background:
    port = port or free_port(host)
    batcher = Batcher(pool, max_batch=max_batch).start()
    server = uvicorn.Server(_config(pool, batcher, host=host, port=port, api_key=api_key, limits=limits,
                                    log_level="warning"))
    thread = threading.Thread(target=server.run, name="peftkit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise PeftkitError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    return Background(server, thread, batcher, f"http://{host}:{port}/v1")
