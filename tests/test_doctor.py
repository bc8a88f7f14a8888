"""peftkit doctor: the report's keys, and that its precision block is exactly what `peftkit train` would choose."""

from __future__ import annotations

import io
import json

from rich.console import Console

from peftkit.cli import main
from peftkit.doctor import doctor_report, render_report
from peftkit.hardware import Gpu, Hardware, choose_precision, detect

KEYS = {"devices", "cpu", "bitsandbytes", "versions", "memory", "disk", "precision"}


def test_doctor_json_has_every_section_and_trains_precision(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == KEYS
    assert report["precision"] == choose_precision("auto", "auto", "auto", detect()).to_dict()
    assert {"python", "torch", "peftkit", "bitsandbytes"} <= set(report["versions"])
    assert set(report["disk"]) == {"cwd", "cache"} and report["disk"]["cwd"]["free_gb"] is not None
    assert report["cpu"]["cores"] >= 1 and report["cpu"]["torch_threads"] >= 1
    assert report["bitsandbytes"]["backend"] in ("cuda", "cpu", None)


def test_cpu_without_native_bf16_picks_float32():
    report = doctor_report(hw=Hardware(cpu_flags=frozenset({"avx2", "avx512f"})))
    assert {c["value"] for k, c in report["precision"].items() if k != "mixed_precision"} == {"float32"}
    assert report["precision"]["mixed_precision"]["value"] == "no"
    assert report["cpu"]["isa"]["avx512f"] and not report["cpu"]["bf16"]
    assert report["devices"] == {"cuda": False, "torch_cuda": report["devices"]["torch_cuda"], "gpus": []}


def test_cpu_with_avx512_bf16_picks_bfloat16():
    report = doctor_report(hw=Hardware(cpu_flags=frozenset({"avx512_bf16"})))
    assert report["precision"]["model_dtype"]["value"] == "bfloat16"
    assert report["precision"]["compute_dtype"]["value"] == "bfloat16"
    assert "avx512_bf16" in report["precision"]["model_dtype"]["why"]
    assert report["cpu"]["bf16"]


def test_gpu_report_and_bitsandbytes_backend():
    hw = Hardware(gpus=(Gpu("Tesla T4", 15.0, "7.5", False),))
    report = doctor_report(hw=hw)
    t4 = {"name": "Tesla T4", "memory_gb": 15.0, "compute_capability": "7.5", "bf16": False}
    assert report["devices"]["gpus"] == [t4]
    assert report["precision"]["mixed_precision"]["value"] == "fp16"
    if report["bitsandbytes"]["installed"]:
        assert report["bitsandbytes"]["backend"] == "cuda"


def test_human_table_renders_every_section():
    report = doctor_report(hw=Hardware(cpu_model="Test CPU", cpu_flags=frozenset({"avx2"}),
                                       gpus=(Gpu("Test GPU", 80.0, "9.0", True),)))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_report(report))
    text = console.export_text()
    for needle in ("Test CPU", "AVX2 yes", "AMX no", "Test GPU", "80.0 GB", "bitsandbytes", "torch", "free RAM",
                   "free disk (cache)", "auto model_dtype", "bfloat16"):
        assert needle in text, needle


def test_human_output_from_cli(capsys):
    assert main(["doctor"]) == 0
    assert "auto model_dtype" in capsys.readouterr().out


def test_missing_bitsandbytes_is_reported_not_raised(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "bitsandbytes":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    report = doctor_report(hw=Hardware())
    assert report["bitsandbytes"] == {"installed": False, "version": None, "backend": None}
    assert report["versions"]["bitsandbytes"] is None
