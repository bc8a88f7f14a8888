"""The report of two real runs (runs/quickstart and runs/quickstart-dpo by default) opened in headless Chromium
(Debian's chromium through Playwright) and kept as a full-page screenshot, benchmarks/results/report.png, for a
person to look at. Fails on a console error or a plot that does not decode.

    .venv/bin/python benchmarks/report_screenshot.py [RUN_DIR ...]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from peftkit.reporting import write_report

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "report.png"


def main(run_dirs: list[str]) -> int:
    runs = run_dirs or [str(ROOT / "runs" / "quickstart"), str(ROOT / "runs" / "quickstart-dpo")]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page_file = write_report(runs, Path(tmp) / "report.html")
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        page.screenshot(path=str(OUT), full_page=True)
        browser.close()
    bad = [w for w in widths if not w]
    print(f"{OUT}: {len(widths)} plots, {len(bad)} not decoded, {len(errors)} console errors {errors}")
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
