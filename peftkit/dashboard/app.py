"""The dashboard's FastAPI app: a static page (peftkit.dashboard.page) and a small JSON + PNG API over a folder
of run directories, read afresh on every request so a run still training shows its newest steps."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from ..errors import RunDirError
from ..reporting.page import choices_table, data_table, eval_table, health_html, samples_html
from ..reporting.plots import BY_KEY, COLOURS, curve_png
from ..reporting.runs import RunView, find_runs, load_run
from .page import PAGE

NO_STORE = {"Cache-Control": "no-store"}


def create_app(root: str | Path, chat: FastAPI | None = None) -> FastAPI:
    """`chat`: peftkit serve's app (peftkit.serving.app) over some runs' adapters; the page then offers a chat
    box and the OpenAI-compatible /v1 routes answer beside the dashboard's."""
    root = Path(root)
    app = FastAPI(title="peftkit ui", docs_url=None, redoc_url=None)

    def all_runs() -> list[RunView]:
        views = []
        for path in find_runs(root):
            try:
                views.append(load_run(path))
            except RunDirError:  # a run directory being created, or unreadable: left out of the list
                continue
        return views

    def colours() -> dict[str, str]:
        """One colour per run, fixed by name order, so a run keeps its colour in every plot and comparison."""
        names = sorted(r.name for r in all_runs())
        return {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}

    def one(name: str) -> RunView:
        path = root / name
        if "/" in name or name.startswith(".") or not path.is_dir():
            raise HTTPException(404, f"no run {name!r} under {root}")
        try:
            return load_run(path)
        except RunDirError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE

    @app.get("/api/runs")
    def runs() -> list[dict]:
        palette = colours()
        return [{"name": r.name, "colour": palette.get(r.name), "finished": r.finished, "preference": r.preference,
                 "step": r.curve[-1]["step"] if r.curve else 0, "max_steps": r.max_steps,
                 "loss": r.curve[-1].get("loss") if r.curve else None} for r in all_runs()]

    @app.get("/api/runs/{name}")
    def run(name: str) -> dict:
        view = one(name)
        return {"name": view.name, "finished": view.finished, "preference": view.preference,
                "step": view.curve[-1]["step"] if view.curve else 0, "max_steps": view.max_steps,
                "html": {"eval": eval_table([view]), "health": health_html(view), "choices": choices_table(view),
                         "data": data_table(view), "samples": samples_html(view)}}

    @app.get("/plot/{key}.png")
    def plot(key: str, runs: str = Query(..., description="run names, comma-separated")) -> Response:
        if key not in BY_KEY:
            raise HTTPException(404, f"no plot {key!r}; one of {', '.join(BY_KEY)}")
        views = [one(n) for n in runs.split(",") if n]
        return Response(curve_png(views, key, colours()), media_type="image/png", headers=NO_STORE)

    @app.get("/api/compare")
    def compare(runs: str) -> dict:
        return {"eval": eval_table([one(n) for n in runs.split(",") if n])}

    @app.get("/api/features")
    def features() -> dict:
        return {"chat": chat is not None}

    if chat is not None:
        app.mount("/", chat)  # after the dashboard's routes: /v1/..., /health
    return app
