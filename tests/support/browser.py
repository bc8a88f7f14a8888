"""Headless Chromium for tests: Debian's `chromium` (apt-get install chromium; `make test` installs it) driven by
Playwright, which is told where it is (no browser download). A missing browser fails the test: a skipped
browser test would prove nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def chromium_path() -> str:
    found = os.environ.get("PEFTKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium: apt-get install -y chromium (or set PEFTKIT_CHROMIUM); `make test` installs it")
    return found


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[tuple[object, list[str]]]:
    """(page, errors): errors collects console errors, uncaught page errors and failed requests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            yield page, errors
        finally:
            browser.close()
