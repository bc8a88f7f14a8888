"""The markdown table and the PNG written next to the JSON."""

import copy

from peftkit.benchmark.report import markdown


def test_markdown_table_and_plot(tiny_bench):
    result, _ = tiny_bench
    md = result.md_path.read_text()
    assert md.startswith("# Bench: `tiny-bench` — peftkit vs TRL SFTTrainer")
    assert "| metric | peftkit | TRL SFTTrainer | peftkit / trl |" in md
    for label in ("trained tokens/s", "peak memory (MB)", "eval loss", "model FLOPs utilisation"):
        assert f"| {label}" in md
    assert "first 2 step(s) of each run (warm-up)" in md and "identical in every run" in md
    assert "| gradient_checkpointing | False (auto: activations of a " in md and "device memory" in md
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.png_path.stat().st_size > 5000


def test_markdown_shows_mismatched_settings(tiny_bench):
    result, _ = tiny_bench
    r = copy.deepcopy(result.results)
    r["settings_check"] = {"ok": False, "mismatches": ["trl run 1: train.lr: expected 0.005, got 0.001"]}
    assert "MISMATCHED: trl run 1: train.lr: expected 0.005, got 0.001" in markdown(r)
