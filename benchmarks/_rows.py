"""What the benchmark scripts share: one `peftkit train` run in a process of its own (so its peak memory is its
own), read back from the run directory it wrote."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from peftkit.rundir import read_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def train_row(recipe: Path, overrides: list[str], run_dir: Path) -> dict:
    """`peftkit train RECIPE overrides...` into run_dir; the run's metrics, or {"error": last stderr line}."""
    cmd = [sys.executable, "-m", "peftkit", "train", str(recipe), *overrides, f"output.dir={run_dir}",
           "output.overwrite=true"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row: dict = {"wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        return {**row, "error": (proc.stderr.strip().splitlines() or ["(no output)"])[-1]}
    run = read_run(run_dir)  # the run directory's typed files, as plain dicts for the table
    metrics, meta = run.metrics.model_dump(), run.meta.model_dump()
    t, e = metrics["train"], metrics["eval"]
    return {
        **row, "trainable_params": meta["params"]["trainable"], "total_params": meta["params"]["total"],
        "gradient_checkpointing": meta.get("gradient_checkpointing"), "packing": meta.get("packing"),
        "adapter_bytes": sum(f.stat().st_size for f in (run_dir / "adapter").glob("adapter_model.*")),
        "tokens": t["tokens"], "trained_tokens": t["trained_tokens"],
        "tokens_per_s": round(t["tokens_per_s"], 1), "trained_tokens_per_s": round(t["trained_tokens_per_s"], 1),
        "peak_memory_mb": round(t["peak_memory_mb"]), "train_s": round(t["train_s"], 1),
        "final_train_loss": t["final_loss"], "loss_curve": t["loss_curve"],
        "eval_loss_before": (e.get("before") or {}).get("loss"), "eval_loss_after": e["after"]["loss"],
        "eval_examples": e.get("examples"),
    }


def machine() -> dict:
    import torch

    from peftkit.hardware import detect

    hw = detect()  # the figures depend on the CPU's vector units: every result records them
    return {"cpu": hw.cpu_model or platform.processor() or platform.machine(),
            "cpu_flags": [f for f, on in hw.isa().items() if on], "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_results(stem: str, result: dict, markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(markdown)
