"""Preference rows at token level: one prompt shared by both answers, only an answer and its end of turn scored,
HH transcripts split at their last turn, unpaired rows, KTO's mismatched partners, and bad rows named."""

from __future__ import annotations

import json

import pytest

from peftkit.data.build import build_data
from peftkit.data.bundle import IGNORE
from peftkit.data.collate import make_collator, with_kl_partners
from peftkit.data.preview import compute_stats, render_preview
from peftkit.errors import DataError
from peftkit.recipe.schema import DataSpec


def _spec(path, **kw) -> DataSpec:
    return DataSpec(**{"format": "preference", "path": str(path), "eval_fraction": 0.0, "eval_path": str(path), **kw})


def _write(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _scored(tok, seq) -> str:
    return tok.decode([i for i, label in zip(seq["input_ids"], seq["labels"]) if label != IGNORE])


PAIR = {"prompt": "add 2 and 3", "chosen": "2 + 3 = 5", "rejected": "2 + 3 = 6"}


def test_both_answers_share_the_prompt_and_only_answers_are_scored(tmp_path, fake_tokenizer):
    bundle = build_data(_spec(_write(tmp_path, [PAIR])), fake_tokenizer, seed=0)
    row = bundle.train[0]
    cut = row["prompt_len"]
    assert row["chosen"]["input_ids"][:cut] == row["rejected"]["input_ids"][:cut]
    prompt = fake_tokenizer.decode(row["chosen"]["input_ids"][:cut])
    assert prompt == "<|im_start|>user\nadd 2 and 3<|im_end|>\n<|im_start|>assistant\n"  # the generation prompt
    assert _scored(fake_tokenizer, row["chosen"]) == "2 + 3 = 5<|im_end|>"
    assert _scored(fake_tokenizer, row["rejected"]) == "2 + 3 = 6<|im_end|>"
    assert all(label == IGNORE for label in row["chosen"]["labels"][:cut])
    held = bundle.eval[0]
    assert held["prompt_ids"] == row["chosen"]["input_ids"][:cut] and held["reference"] == "2 + 3 = 5"
    assert bundle.report.train.trained_tokens == sum(
        sum(1 for x in row[k]["labels"][1:] if x != IGNORE) for k in ("chosen", "rejected"))


def test_earlier_assistant_turns_of_a_chat_prompt_are_context(tmp_path, fake_tokenizer):
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "add 1 and 1"}]
    row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "2"}], "rejected": "3"}
    pair = build_data(_spec(_write(tmp_path, [row])), fake_tokenizer, seed=0).train[0]
    assert _scored(fake_tokenizer, pair["chosen"]) == "2<|im_end|>"
    assert _scored(fake_tokenizer, pair["rejected"]) == "3<|im_end|>"
    assert "hello" in fake_tokenizer.decode(pair["chosen"]["input_ids"][: pair["prompt_len"]])


def test_hh_transcripts_split_at_the_last_turn(tmp_path, fake_tokenizer):
    history = "\n\nHuman: add 1 and 1\n\nAssistant: 2\n\nHuman: and 2 and 2?"
    row = {"chosen": history + "\n\nAssistant: 4", "rejected": history + "\n\nAssistant: 5"}
    spec = _spec(_write(tmp_path, [row]), transcript_roles={"Human": "user", "Assistant": "assistant"})
    pair = build_data(spec, fake_tokenizer, seed=0).train[0]
    prompt = fake_tokenizer.decode(pair["chosen"]["input_ids"][: pair["prompt_len"]])
    assert prompt.count("<|im_start|>user") == 2 and "2<|im_end|>" in prompt
    assert _scored(fake_tokenizer, pair["chosen"]) == "4<|im_end|>"
    assert _scored(fake_tokenizer, pair["rejected"]) == "5<|im_end|>"


def test_without_a_chat_template_answers_end_with_eos(tmp_path, make_tokenizer):
    tok = make_tokenizer(chat_template=None)
    pair = build_data(_spec(_write(tmp_path, [PAIR])), tok, seed=0).train[0]
    assert tok.decode(pair["chosen"]["input_ids"][: pair["prompt_len"]]) == "add 2 and 3"
    assert _scored(tok, pair["chosen"]) == "2 + 3 = 5<|im_end|>"


def test_unpaired_rows_keep_their_label(tmp_path, fake_tokenizer):
    rows = [{"prompt": "add 2 and 3", "completion": "2 + 3 = 5", "label": True},
            {"prompt": "add 2 and 3", "completion": "2 + 3 = 6", "label": "false"}]
    spec = DataSpec(format="unpaired_preference", path=str(_write(tmp_path, rows)), eval_fraction=0.0,
                    eval_path=str(tmp_path / "pairs.jsonl"))
    bundle = build_data(spec, fake_tokenizer, seed=0)
    assert sorted(r["desirable"] for r in bundle.train) == [False, True]
    assert all(_scored(fake_tokenizer, r).startswith("2 + 3 = ") for r in bundle.train)


@pytest.mark.parametrize("row, why", [
    ({"prompt": "p", "chosen": "a"}, "missing field 'rejected'"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "chosen and rejected are the same answer"),
    ({"prompt": "p", "chosen": "a", "rejected": "   "}, "field 'rejected' is empty"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "field 'chosen' should be text"),
    ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
    ({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "field 'chosen' should be text or one assistant message"),
])
def test_a_malformed_pair_is_one_line_naming_file_and_row(tmp_path, fake_tokenizer, row, why):
    path = _write(tmp_path, [PAIR, PAIR, row])
    with pytest.raises(DataError) as err:
        build_data(_spec(path), fake_tokenizer, seed=0)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "row 3" in message and why in message


def test_transcripts_that_differ_before_the_last_turn_are_refused(tmp_path, fake_tokenizer):
    row = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}
    spec = _spec(_write(tmp_path, [row]), transcript_roles={"Human": "user", "Assistant": "assistant"})
    with pytest.raises(DataError, match="differ before their last turn"):
        build_data(spec, fake_tokenizer, seed=0)


def test_skip_counts_bad_pairs(tmp_path, fake_tokenizer):
    path = _write(tmp_path, [PAIR, {"prompt": "p", "chosen": "a", "rejected": "a"}, PAIR])
    bundle = build_data(_spec(path, on_bad_row="skip"), fake_tokenizer, seed=0)
    assert len(bundle.train) == 2 and bundle.report.train.skipped == 1


def test_pair_batches_put_chosen_first_and_number_every_answer(tmp_path, fake_tokenizer):
    rows = [dict(PAIR, prompt=f"add {i} and 3") for i in range(3)]
    bundle = build_data(_spec(_write(tmp_path, rows)), fake_tokenizer, seed=0)
    batch = make_collator(fake_tokenizer, packing=False, objective="dpo")(bundle.train)
    assert batch["input_ids"].shape[0] == 6 and int(batch["pairs"]) == 3
    index = [r["index"] for r in bundle.train]
    assert batch["answer_index"].tolist() == [2 * i for i in index] + [2 * i + 1 for i in index]
    first = bundle.train[0]["chosen"]["input_ids"]
    assert batch["input_ids"][0, : len(first)].tolist() == first


def test_kto_items_and_their_mismatched_partners(tmp_path, fake_tokenizer):
    rows = [dict(PAIR, prompt=f"add {i} and 3", chosen=f"{i} + 3 = {i + 3}") for i in range(3)]
    bundle = build_data(_spec(_write(tmp_path, rows)), fake_tokenizer, seed=0)
    paired = with_kl_partners(bundle.train, 64)
    batch = make_collator(fake_tokenizer, packing=False, objective="kto")(paired)
    assert batch["desirable"].tolist() == [True] * 3 + [False] * 3
    # item 0's mismatch: its own prompt, the next row's chosen answer
    a, b = paired[0], paired[1]
    want = a["chosen"]["input_ids"][: a["prompt_len"]] + b["chosen"]["input_ids"][b["prompt_len"]:]
    assert batch["kl_input_ids"][0, : len(want)].tolist() == want
    assert _scored(fake_tokenizer, a["kl"][0]) == _scored(fake_tokenizer, b["chosen"])
    assert int((batch["kl_labels"][0] != IGNORE).sum()) == sum(1 for x in b["chosen"]["labels"] if x != IGNORE)


def test_preview_and_stats_show_both_answers(tmp_path, fake_tokenizer):
    bundle = build_data(_spec(_write(tmp_path, [PAIR])), fake_tokenizer, seed=0)
    text = str(render_preview(bundle, fake_tokenizer, 1, plain=True))
    assert "chosen → [[2 + 3 = 5<|im_end|>]]" in text and "rejected → [[2 + 3 = 6<|im_end|>]]" in text
    stats = compute_stats(bundle, batch_size=1)
    row = bundle.train[0]
    assert stats.tokens == len(row["chosen"]["input_ids"]) + len(row["rejected"]["input_ids"])
