"""Token-level masks on the real SmolLM2 tokenizer: which ids carry loss, for every causal format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftkit.data import IGNORE, build_data
from peftkit.recipe.schema import DataSpec

pytestmark = pytest.mark.integration
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def build(tmp_path, tok, rows, **spec):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    spec = DataSpec(path=path, eval_path=path, **spec)
    return build_data(spec, tok, base_dir=tmp_path, seed=0)


def chatml_expected_labels(tok, ids: list[int]) -> list[int]:
    """Independent of the implementation: after each '<|im_start|>assistant\\n', train through the next <|im_end|>."""
    header = tok.encode(f"{IM_START}assistant\n", add_special_tokens=False)
    im_end = tok.convert_tokens_to_ids(IM_END)
    labels, i = [IGNORE] * len(ids), 0
    while i < len(ids):
        if ids[i : i + len(header)] == header:
            j = i + len(header)
            while ids[j] != im_end:
                labels[j] = ids[j]
                j += 1
            labels[j] = im_end
            i = j
        i += 1
    return labels


def trained_text(tok, row) -> list[str]:
    """Decoded runs of trained tokens."""
    runs, cur = [], []
    for t, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_chat_trains_every_assistant_turn_and_its_end_of_turn(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6, of course."},
    ]
    b = build(tmp_path, tok, [{"messages": messages}], format="chat")
    row = b.eval[0]
    full = tok.apply_chat_template(messages, tokenize=False)
    assert row["input_ids"] == tok.encode(full, add_special_tokens=False)  # masking did not change tokenization
    assert row["labels"] == chatml_expected_labels(tok, row["input_ids"])
    assert trained_text(tok, row) == ["4.<|im_end|>", "6, of course.<|im_end|>"]
    im_end = tok.convert_tokens_to_ids(IM_END)
    ends = [i for i, t in enumerate(row["input_ids"]) if t == im_end]
    assert [row["labels"][i] == im_end for i in ends] == [False, False, True, False, True]  # system, user untrained
    assert im_end in b.stop_token_ids
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert row["prompt_ids"] == tok.encode(prompt, add_special_tokens=False)
    assert row["reference"] == "6, of course."


def test_train_on_inputs_trains_everything_but_the_first_token(tmp_path, smol_tokenizer):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    row = build(tmp_path, smol_tokenizer, rows, format="chat", train_on_inputs=True).train[0]
    assert row["labels"][0] == IGNORE and row["labels"][1:] == row["input_ids"][1:]


def test_sharegpt_tool_calls_are_trained_and_observations_are_not(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    call = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    row = {
        "conversations": [
            {"from": "human", "value": "Add 1 and 2."},
            {"from": "function_call", "value": call},
            {"from": "observation", "value": '{"result": 3}'},
            {"from": "gpt", "value": "It is 3."},
        ],
        "tools": json.dumps([{"name": "add", "parameters": {}}]),
    }
    out = build(tmp_path, tok, [row], format="chat").eval[0]
    assert trained_text(tok, out) == [call + IM_END, "It is 3." + IM_END]
    text = tok.decode(out["input_ids"])
    assert '<|im_start|>system\nYou are a helpful assistant with access to the following functions' in text
    assert '{"name": "add", "parameters": {}}' in text
    assert '<|im_start|>tool\n{"result": 3}<|im_end|>' in text


def test_hh_transcript_is_split_into_turns(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    rows = [{"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Goodbye."}]
    out = build(tmp_path, tok, rows, format="chat", columns={"messages": "chosen"},
                transcript_roles={"Human": "user", "Assistant": "assistant"}).eval[0]
    assert trained_text(tok, out) == ["Hello!" + IM_END, "Goodbye." + IM_END]
    assert "<|im_start|>user\nBye<|im_end|>" in tok.decode(out["input_ids"])


def test_alpaca_through_the_chat_template(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    rows = [{"instruction": "Reverse the list.", "input": "[1, 2]", "output": "[2, 1]"}]
    out = build(tmp_path, tok, rows, format="alpaca").eval[0]
    assert trained_text(tok, out) == ["[2, 1]" + IM_END]
    assert "<|im_start|>user\nReverse the list.\n\n[1, 2]<|im_end|>" in tok.decode(out["input_ids"])
    assert out["labels"] == chatml_expected_labels(tok, out["input_ids"])


def test_alpaca_classic_text_trains_output_and_eos(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    out = build(tmp_path, tok, rows, format="alpaca", prompt_template="alpaca").eval[0]
    assert trained_text(tok, out) == ["hi" + tok.eos_token]
    assert out["labels"][-1] == tok.eos_token_id
    assert tok.decode(out["prompt_ids"]).endswith("### Instruction:\nSay hi.\n\n### Response:\n")


def test_prompt_completion_raw(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    out = build(tmp_path, tok, [{"prompt": "2+2=", "completion": "4"}], format="prompt_completion").eval[0]
    assert out["input_ids"] == tok.encode("2+2=", add_special_tokens=False) + tok.encode("4", add_special_tokens=False) + [tok.eos_token_id]
    assert trained_text(tok, out) == ["4" + tok.eos_token]
    assert out["prompt_ids"] == tok.encode("2+2=", add_special_tokens=False)


def test_completion_trains_every_token_in_windows(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    text = "To be, or not to be, that is the question. " * 20
    (tmp_path / "a.txt").write_text(text)
    spec = DataSpec(format="completion", path="a.txt", max_length=32, eval_fraction=0.2)
    b = build_data(spec, tok, base_dir=tmp_path, seed=0)
    stream = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    windows = b.train + b.eval
    assert sorted(t for w in windows for t in w["input_ids"]) == sorted(stream)
    for w in windows:
        assert len(w["input_ids"]) <= 32
        assert w["labels"] == [IGNORE, *w["input_ids"][1:]]


def test_truncated_response_is_counted_and_a_fully_truncated_one_dropped(tmp_path, smol_tokenizer):
    tok = smol_tokenizer
    long_answer = "word " * 200
    rows = [
        {"messages": [{"role": "user", "content": "short?"}, {"role": "assistant", "content": long_answer}]},
        {"messages": [{"role": "user", "content": "long " * 200}, {"role": "assistant", "content": "ok"}]},
    ]
    b = build(tmp_path, tok, rows, format="chat", max_length=64)
    assert b.report.eval.examples == 1 and b.report.eval.truncated == 1 and b.report.eval.dropped == 1
    kept = b.eval[0]
    assert len(kept["input_ids"]) == 64 and kept["labels"][-1] != IGNORE
