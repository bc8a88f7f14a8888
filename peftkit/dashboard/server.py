"""`peftkit ui`: the dashboard on localhost until interrupted."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from ..errors import PeftkitError
from .app import create_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run_dashboard(runs: str | Path, *, host: str = "127.0.0.1", port: int = 7860, chat: list[str] = (),
                  console=None) -> None:
    """Serve the dashboard over the run directories under `runs`. A host beyond this machine must be asked for:
    the page shows prompts, answers and file paths. `chat`: runs (on one base) whose adapters the chat box
    offers, served by peftkit serve's pool and batcher."""
    root = Path(runs)
    if not root.is_dir():
        raise PeftkitError(f"--runs {root}: not a folder")
    chat_app = _chat_app(list(chat)) if chat else None
    if console is not None:
        where = "" if host in LOCAL_HOSTS else " (reachable from other machines)"
        console.print(f"peftkit ui: http://{host}:{port}/ over {root}{where}", highlight=False)
    try:
        uvicorn.Server(uvicorn.Config(create_app(root, chat_app), host=host, port=port, log_level="warning")).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after shutting down: a normal stop
        pass


def _chat_app(targets: list[str]):
    from ..serving.app import create_app as serving_app
    from ..serving.batcher import Batcher
    from ..serving.pool import open_pool

    pool = open_pool(targets)
    return serving_app(pool, Batcher(pool).start())
