"""`peftkit doctor`: the facts a bug report needs, gathered in a few seconds.

Reads versions from package metadata and never imports transformers, peft or bitsandbytes (bitsandbytes alone
takes seconds and prints kernel notices). The precision block comes from hardware.choose_precision(), the same
call `peftkit train` makes, so doctor reports what training would do, not a second copy of the rule.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

from rich.table import Table

from .hardware import Hardware, available_ram_bytes, choose_precision, detect
from .modeling.zoo import cache_root
from .rundir import versions

# ISA rows of the table; the JSON carries Hardware.isa() whole.
ISA_SHOWN = (("AVX2", ("avx2",)), ("AVX-512", ("avx512f",)), ("AVX512-BF16", ("avx512_bf16",)),
             ("AMX", ("amx_tile", "amx_bf16")))


def doctor_report(hw: Hardware | None = None) -> dict:
    """Everything `peftkit doctor` prints, as plain JSON-ready values. `hw` is injectable so tests never
    depend on the machine they run on; machine facts that precision does not use (RAM, disk, cores) are real."""
    import torch

    hw = hw or detect()
    return {
        "devices": {"cuda": hw.cuda, "torch_cuda": torch.version.cuda, "gpus": hw.to_dict()["gpus"]},
        "cpu": {"model": hw.cpu_model, "isa": hw.isa(), "bf16": hw.cpu_bf16,
                "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "bitsandbytes": _bitsandbytes(hw),
        "versions": versions(),
        "memory": _free_ram(),
        "disk": {"cwd": _free_disk(Path.cwd()), "cache": _free_disk(cache_root())},
        "precision": choose_precision("auto", "auto", "auto", hw).to_dict(),
    }


def _bitsandbytes(hw: Hardware) -> dict:
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False, "version": None, "backend": None}
    # bitsandbytes picks CUDA kernels when torch sees a GPU and its CPU path otherwise; hw.cuda is that same fact.
    return {"installed": True, "version": version, "backend": "cuda" if hw.cuda else "cpu"}


def _free_ram() -> dict:
    available, source = available_ram_bytes()
    return {"available_gb": _gb(available) if available is not None else None, "source": source}


def _free_disk(path: Path) -> dict:
    """Free space where `path` lives; a cache folder not created yet is measured at its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = _gb(shutil.disk_usage(probe).free)
    except OSError:
        free = None
    return {"path": str(path), "exists": path.exists(), "free_gb": free}


def _gb(n: int) -> float:
    return round(n / 2**30, 1)


def render_report(report: dict) -> Table:
    """The report as one two-column table, sections in the JSON's order."""
    table = Table(title="peftkit doctor", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")

    def section(rows: list[tuple[str, str]]) -> None:
        for key, value in rows:
            table.add_row(key, value)
        table.add_section()

    dev, cpu, bnb = report["devices"], report["cpu"], report["bitsandbytes"]
    gpus = [(f"gpu {i}", f"{g['name']}, {g['memory_gb']} GB, compute {g['compute_capability']}, "
             f"bf16 {_yes(g['bf16'])}") for i, g in enumerate(dev["gpus"])]
    build = f"torch built for CUDA {dev['torch_cuda']}" if dev["torch_cuda"] else "CPU-only torch build"
    section([("CUDA", f"{_yes(dev['cuda'])} ({build})"), *gpus])

    isa = "  ".join(f"{label} {_yes(any(cpu['isa'].get(f) for f in flags))}" for label, flags in ISA_SHOWN)
    section([("CPU", cpu["model"] or "unknown"), ("ISA", isa),
             ("cores", f"{cpu['cores']} (torch threads {cpu['torch_threads']})")])

    section([("bitsandbytes", f"{bnb['version']}, backend {bnb['backend']}" if bnb["installed"] else "not installed")])
    section([(name, v or "not installed") for name, v in report["versions"].items()])

    disk = report["disk"]
    section([("free RAM", _size(report["memory"]["available_gb"])),
             *((f"free disk ({label})", f"{_size(disk[label]['free_gb'])} at {disk[label]['path']}")
               for label in ("cwd", "cache"))])

    for key, c in report["precision"].items():
        table.add_row(f"auto {key}", f"{c['value']}: {c['why']}")
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _size(gb: float | None) -> str:
    return "unknown" if gb is None else f"{gb} GB"
