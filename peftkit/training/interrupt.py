"""Ctrl-C / SIGTERM during training: finish the current step, then stop cleanly (a second Ctrl-C stops at once)."""

from __future__ import annotations

import signal
import threading


class GracefulStop:
    """Context manager; handlers are installed only for the duration of fit() and restored after."""

    def __init__(self):
        self.requested: str | None = None
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
