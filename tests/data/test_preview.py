"""Preview marks trained tokens; stats count what is trained and what padding costs."""

from __future__ import annotations

import json

from rich.console import Console

from peftkit.data import IGNORE, build_data
from peftkit.data.preview import compute_stats, render_preview
from peftkit.data.stats import padding_waste, percentiles
from peftkit.recipe.schema import DataSpec


def bundle(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}]}] * 3
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_data(DataSpec(format="chat", path="d.jsonl", eval_path="d.jsonl"), tok, base_dir=tmp_path, seed=0)


def test_plain_preview_brackets_exactly_the_trained_text(tmp_path, fake_tokenizer):
    text = str(render_preview(bundle(tmp_path, fake_tokenizer), fake_tokenizer, n=2, plain=True))
    assert text.count("[[answer<|im_end|>]]") == 2
    assert "<|im_start|>user\nquestion<|im_end|>\n<|im_start|>assistant\n[[answer" in text
    assert "example 3" not in text and "2 of 3 train examples" in text


def test_styled_preview_differs_for_trained_tokens(tmp_path, fake_tokenizer):
    console = Console(force_terminal=True, color_system="standard", width=80, record=True)
    console.print(render_preview(bundle(tmp_path, fake_tokenizer), fake_tokenizer, n=1))
    ansi = console.export_text(styles=True)
    assert "\x1b[1;32manswer<|im_end|>" in ansi  # bold green
    assert "\x1b[2mquestion" in ansi or "\x1b[2m<|im_start|>user" in ansi  # dim


def test_classification_preview_shows_the_label(fake_tokenizer):
    rows = [{"input_ids": fake_tokenizer.encode("good film", add_special_tokens=False), "labels": 1}]
    text = str(render_preview(rows, fake_tokenizer, n=1, plain=True))
    assert "good film  → label [[1]]" in text


def test_stats(tmp_path, fake_tokenizer):
    b = bundle(tmp_path, fake_tokenizer)
    s = compute_stats(b, batch_size=2).to_dict()
    n = len(b.train[0]["input_ids"])
    assert s["examples"] == 3 and s["tokens"] == 3 * n
    assert s["trained_tokens"] == sum(x != IGNORE for x in b.train[0]["labels"]) * 3
    assert s["padding_waste_unpacked"] == 0.0 and s["length_percentiles"]["p50"] == n
    json.dumps(s)


def test_padding_waste_and_percentiles():
    assert padding_waste([4, 2, 2, 2], 2, packed=False) == round(1 - 10 / 12, 4)
    assert padding_waste([4, 2, 2, 2], 2, packed=True) == 0.0
    assert padding_waste([3, 2], 2, packed=True, multiple=8) == round(1 - 5 / 8, 4)
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p100": 100}


def test_stats_table_has_a_column_per_split(tmp_path, fake_tokenizer):
    from peftkit.data.preview import render_stats

    b = bundle(tmp_path, fake_tokenizer)
    console = Console(width=120, record=True)
    console.print(render_stats(compute_stats(b, batch_size=2), compute_stats(b, batch_size=2, split="eval")))
    text = console.export_text()
    assert "train" in text and "eval" in text and "padding waste, packed" in text
