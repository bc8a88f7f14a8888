"""Classification rows on the real MiniLM (BERT) tokenizer: [CLS] text [SEP] (pair), truncation keeps [SEP]."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from peftkit.data import build_data, make_collator
from peftkit.data.preview import compute_stats
from peftkit.recipe.schema import DataSpec

pytestmark = pytest.mark.integration


def test_pairs_truncation_and_batches(tmp_path, minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    long = "word " * 40
    (tmp_path / "d.csv").write_text(f"premise,hypothesis,gold\na cat,an animal,yes\n{long},short,no\n")
    spec = DataSpec(format="classification", path="d.csv", eval_path="d.csv", max_length=16,
                    columns={"text": "premise", "text_pair": "hypothesis", "label": "gold"})
    b = build_data(spec, tok, base_dir=tmp_path, seed=0, task="sequence_classification")
    assert b.label_names == ("no", "yes") and dict(b.report.label_counts) == {"no": 1, "yes": 1}
    first = b.eval[0]
    assert first["input_ids"] == tok("a cat", "an animal")["input_ids"] and first["labels"] == 1
    assert first["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]  # [CLS] a cat [SEP] an animal [SEP]
    second = b.eval[1]
    assert len(second["input_ids"]) == 16 and second["input_ids"][-1] == tok.sep_token_id
    assert b.report.eval.truncated == 1
    batch = make_collator(tok, packing=False, task="sequence_classification")(b.eval)
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"][0, 7:].eq(tok.pad_token_id).all()
    assert compute_stats(b, batch_size=2, split="eval").label_counts == {"no": 1, "yes": 1}
