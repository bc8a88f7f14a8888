"""Row validation and rendering per format (small in-memory ChatML tokenizer)."""

from __future__ import annotations

import pytest

from peftkit.data.bundle import RowProblem
from peftkit.data.formats import RenderPlan, chat_messages, parse_transcript, render_row
from peftkit.data.templates import resolve_chat_format, stop_token_ids
from peftkit.recipe.schema import DataSpec


def spec(**kw) -> DataSpec:
    return DataSpec(path="x.jsonl", **{"format": "chat", **kw})


def trained(rendered) -> list[str]:
    return [s.text for s in rendered.segments if s.trained]


def chat_plan(tok, choice="auto") -> RenderPlan:
    return RenderPlan(resolve_chat_format(tok, choice), None, None)


@pytest.mark.parametrize("row, message", [
    ({}, "missing field 'messages'"),
    ({"messages": "hi"}, "is text, not a list of turns"),
    ({"messages": 3}, "should be a list of turns, got int"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "turn 1: unknown role 'wizard'"),
    ({"messages": [{"role": "user", "content": 5}]}, "turn 1: 'content' is int, not text"),
    ({"messages": [{"role": "user"}]}, "turn 1: 'content' is missing"),
    ({"messages": ["hi"]}, "turn 1 should be an object"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "assistant speaks before any user turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}, "turn 2: empty assistant"),
])
def test_bad_chat_rows(row, message):
    with pytest.raises(RowProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        chat_messages(row, spec())


def test_sharegpt_roles_and_custom_mapping():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                             {"from": "critic", "value": "c"}, {"from": "gpt", "value": "b"}]}
    with pytest.raises(RowProblem, match="unknown role 'critic'"):
        chat_messages(row, spec())
    msgs = chat_messages(row, spec(roles={"critic": "user"}))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]


def test_configured_field_names():
    row = {"dialog": [{"speaker": "user", "text": "q"}, {"speaker": "assistant", "text": "a"}]}
    msgs = chat_messages(row, spec(columns={"messages": "dialog", "role": "speaker", "content": "text"}))
    assert msgs == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_trailing_user_turns_are_dropped_and_system_prompt_added():
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                        {"role": "user", "content": "thanks"}]}
    msgs = chat_messages(row, spec(system_prompt="Be kind."))
    assert msgs == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"}]


def test_tools_go_into_the_system_turn():
    row = {"messages": [{"role": "system", "content": "Base."}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}], "tools": '[{"name": "f"}]'}
    msgs = chat_messages(row, spec())
    assert msgs[0]["content"].startswith("Base.\n\nYou are a helpful assistant with access")
    assert msgs[0]["content"].endswith('{"name": "f"}')
    empty = {**row, "tools": "[]"}
    assert chat_messages(empty, spec())[0]["content"] == "Base."
    with pytest.raises(RowProblem, match="'tools' is not valid JSON"):
        chat_messages({**row, "tools": "[oops"}, spec())


def test_transcript_parsing():
    msgs = parse_transcript("\n\nHuman: hi\nthere\n\nAssistant: yo\n\nHuman: bye", {"Human": "user", "Assistant": "assistant"})
    assert msgs == [{"role": "user", "content": "hi\nthere"}, {"role": "assistant", "content": "yo"},
                    {"role": "user", "content": "bye"}]
    with pytest.raises(RowProblem, match="does not start with a speaker marker"):
        parse_transcript("preamble\n\nHuman: hi", {"Human": "user"})


def test_chat_render_marks_each_reply_through_end_of_turn(fake_tokenizer):
    tok = fake_tokenizer
    row = {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    r = render_row(row, spec(), chat_plan(tok), tok)
    assert trained(r) == ["a1<|im_end|>", "a2<|im_end|>"]
    assert "".join(s.text for s in r.segments) == tok.apply_chat_template(row["messages"], tokenize=False)
    assert "".join(s.text for s in r.segments[: r.prompt_end]).endswith("q2<|im_end|>\n<|im_start|>assistant\n")
    assert r.reference == "a2"


@pytest.mark.parametrize("name, end", [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>"), ("zephyr", "<|im_end|>")])
def test_named_templates_on_a_base_without_one(name, end, make_tokenizer):
    tok = make_tokenizer(chat_template=None)
    if name == "llama3":
        tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]})
    fmt = resolve_chat_format(tok, "auto" if name == "chatml" else name)
    assert fmt.name == name and fmt.end_of_turn == end  # zephyr closes turns with eos_token, here <|im_end|>
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    r = render_row(row, spec(chat_template=name), RenderPlan(fmt, None, None), tok)
    assert trained(r) == ["a" + end]
    assert tok.convert_tokens_to_ids(end) in stop_token_ids(tok, fmt)


def test_template_without_end_marker_gets_eos_appended(make_tokenizer):
    tok = make_tokenizer(chat_template=(
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"))
    fmt = resolve_chat_format(tok, "tokenizer")
    assert fmt.end_of_turn is None
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert trained(render_row(row, spec(), RenderPlan(fmt, None, None), tok)) == ["a", "<|im_end|>"]


def test_alpaca_rendering_choices(fake_tokenizer):
    tok = fake_tokenizer
    row = {"instruction": "Add.", "input": "1 2", "output": "3"}
    s = spec(format="alpaca")
    chat = render_row(row, s, chat_plan(tok), tok)
    assert trained(chat) == ["3<|im_end|>"] and "user\nAdd.\n\n1 2<|im_end|>" in chat.segments[0].text
    classic = render_row(row, s, RenderPlan(None, "alpaca", None), tok)
    assert "### Input:\n1 2\n\n### Response:\n" in classic.segments[0].text and trained(classic) == ["3", "<|im_end|>"]
    custom = render_row(row, s, RenderPlan(None, "Q: {instruction} {input} {json}\nA: ", None), tok)
    assert custom.segments[0].text == "Q: Add. 1 2 {json}\nA: "  # unknown braces stay as text
    with pytest.raises(RowProblem, match="has an input but data.prompt_template has no"):
        render_row(row, s, RenderPlan(None, "Q: {instruction}\nA: ", None), tok)
    with pytest.raises(RowProblem, match="field 'output' is empty"):
        render_row({**row, "output": ""}, s, chat_plan(tok), tok)
    with pytest.raises(RowProblem, match="field 'instruction' should be text, got int"):
        render_row({**row, "instruction": 1}, s, chat_plan(tok), tok)
