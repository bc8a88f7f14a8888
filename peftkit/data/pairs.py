"""Preference rows -> one prompt and its answers, rendered exactly as SFT renders a conversation.

`preference` rows: prompt + chosen + rejected, each text or chat messages (prompt: a list of turns; an answer:
text or one assistant message), or with data.transcript_roles set and no prompt column, two whole transcripts
("\\n\\nHuman: ...\\n\\nAssistant: ...", as in HH-RLHF) whose shared turns are the prompt. `unpaired_preference`
rows (KTO): prompt + completion + label (true: desirable).

Only the final answer and its end-of-turn token carry log-probabilities: earlier assistant turns of a multi-turn
prompt are context. Prompts are rendered with the generation prompt, so they are token-identical to inference.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe.schema.data import DataSpec
from .bundle import Rendered, RowProblem, Segment
from .formats import RenderPlan, _fill, chat_messages, col, parse_transcript, text_field
from .render import render_chat, render_plain


@dataclass(frozen=True)
class Parts:
    """A prompt (messages) and its answers' texts. `labels[i]` is None for pairs (answers are chosen, rejected)."""

    prompt: list[dict]
    answers: tuple[str, ...]
    desirable: bool | None = None


def preference_parts(row: dict, spec: DataSpec) -> Parts:
    """The prompt and answers of one row, validated; raises RowProblem naming the field."""
    if spec.format == "unpaired_preference":
        prompt = _prompt(row, spec)
        return Parts(prompt, (_answer(row, col(spec, "completion")),), _desirable(row, col(spec, "label")))
    prompt_key = col(spec, "prompt")
    if spec.transcript_roles and prompt_key not in row:
        return _transcript_pair(row, spec)
    prompt = _prompt(row, spec)
    chosen, rejected = _answer(row, col(spec, "chosen")), _answer(row, col(spec, "rejected"))
    if chosen == rejected:
        raise RowProblem("chosen and rejected are the same answer: nothing to prefer")
    return Parts(prompt, (chosen, rejected))


def _prompt(row: dict, spec: DataSpec) -> list[dict]:
    key = col(spec, "prompt")
    if key not in row or row[key] is None:
        hint = " (whole transcripts: set data.transcript_roles)" if key not in row and not spec.transcript_roles else ""
        raise RowProblem(f"missing field '{key}'{hint}" if key not in row else f"field '{key}' is null")
    value = row[key]
    system = text_field(row, col(spec, "system"), required=False) or spec.system_prompt
    if isinstance(value, str):
        if not value.strip():
            raise RowProblem(f"field '{key}' is empty")
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RowProblem(f"field '{key}' should be text or a list of turns, got {type(value).__name__}")
    # validated as a chat that a placeholder answer completes: roles known, a user turn first, no empty replies
    probe = {"messages": [*value, {"role": "assistant", "content": "."}], **({"system": system} if system else {})}
    plain = spec.model_copy(update={"columns": {}, "transcript_roles": None, "system_prompt": None})
    return chat_messages(probe, plain)[:-1]


def _answer(row: dict, key: str) -> str:
    if key not in row or row[key] is None:
        raise RowProblem(f"missing field '{key}'" if key not in row else f"field '{key}' is null")
    value = row[key]
    if isinstance(value, list):  # conversational form: one assistant message
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise RowProblem(f"field '{key}' should be text or one assistant message")
        value = value[0].get("content")
    if not isinstance(value, str):
        raise RowProblem(f"field '{key}' should be text, got {type(value).__name__}")
    if not value.strip():
        raise RowProblem(f"field '{key}' is empty: nothing to compare")
    return value


def _desirable(row: dict, key: str) -> bool:
    value = row.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if key not in row:
        raise RowProblem(f"missing field '{key}'")
    raise RowProblem(f"field '{key}' should be true (desirable) or false, got {value!r}")


def _transcript_pair(row: dict, spec: DataSpec) -> Parts:
    turns = []
    for key in (col(spec, "chosen"), col(spec, "rejected")):
        text = text_field(row, key)
        messages = parse_transcript(text, spec.transcript_roles)
        if not messages or messages[-1]["role"] != "assistant":
            raise RowProblem(f"field '{key}' does not end with an assistant turn")
        if not messages[-1]["content"].strip():
            raise RowProblem(f"field '{key}': the last assistant turn is empty")
        turns.append(messages)
    chosen, rejected = turns
    if chosen[:-1] != rejected[:-1]:
        raise RowProblem("chosen and rejected transcripts differ before their last turn: no shared prompt")
    if chosen[-1] == rejected[-1]:
        raise RowProblem("chosen and rejected are the same answer: nothing to prefer")
    prompt = chosen[:-1]
    if not any(m["role"] == "user" for m in prompt):
        raise RowProblem("the transcripts have no user turn before the answer")
    system = spec.system_prompt
    if system and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system}, *prompt]
    return Parts(prompt, (chosen[-1]["content"], rejected[-1]["content"]))


def render_answer(prompt: list[dict], answer: str, plan: RenderPlan, tokenizer) -> Rendered:
    """prompt + answer, only the answer (through its end of turn) trained."""
    if plan.chat is None:
        if len(prompt) != 1 or prompt[0]["role"] != "user":
            raise RowProblem("a prompt with several turns or a system turn needs a chat template "
                             "(data.prompt_template: chat)")
        text = _fill(plan.plain_template or "{prompt}", prompt=prompt[0]["content"])
        return render_plain(text, answer, tokenizer, bos=plan.bos)
    rendered = render_chat([*prompt, {"role": "assistant", "content": answer}], tokenizer, plan.chat)
    end = rendered.prompt_end
    # earlier assistant turns of the prompt are context here, not answers being compared
    segments = tuple(Segment(s.text, s.trained and k >= end) for k, s in enumerate(rendered.segments))
    return Rendered(segments, end, rendered.reference)
