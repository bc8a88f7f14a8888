"""One input row -> a rendered example, per `data.format`. Every check raises RowProblem with a short reason;
the builder adds the file and row (or counts a skip). `row_problem` is the check that needs no tokenizer:
build_data applies it to every row before rendering, preflight to the first rows of each file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..recipe.schema.data import PREFERENCE_FORMATS, DataSpec
from .bundle import Rendered, RowProblem
from .render import render_chat, render_plain
from .templates import ChatFormat

# Source role (lower-cased) -> the role rendered. function_call is the assistant calling a tool (trained);
# observation is the tool's answer (context, not trained).
DEFAULT_ROLES: dict[str, str] = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "function_call": "assistant", "tool": "tool", "observation": "tool",
    "function": "tool", "ipython": "tool",
}

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class RenderPlan:
    """How prompts of this dataset are rendered: through a chat template, or a plain text template."""

    chat: ChatFormat | None
    plain_template: str | None  # "alpaca", or a string with {instruction}/{input} or {prompt}
    bos: str | None  # BOS text prepended to plain renders when the tokenizer adds one itself

    @property
    def name(self) -> str:
        return self.chat.name if self.chat else ("alpaca" if self.plain_template == "alpaca" else "plain")


def col(spec: DataSpec, name: str) -> str:
    return spec.columns.get(name, name)


def text_field(row: dict, key: str, *, required: bool = True) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise RowProblem(f"missing field '{key}'" if key not in row else f"field '{key}' is null")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise RowProblem(f"field '{key}' should be text, got {type(value).__name__}")
    return value


def row_problem(row: dict, spec: DataSpec) -> str | None:
    """Why this row cannot be used in `spec.format` (None when it can): a required field missing, null or not
    text, a blank response, a chat that does not validate, a classification label that is absent or not text or
    an integer. What only a template can tell (a row's input with no {input} to put it in) and whether a label
    is one of the label names are left to the builder."""
    try:
        if spec.format == "chat":
            chat_messages(row, spec)
        elif spec.format == "alpaca":  # fields in the order render_row reads them
            text_field(row, col(spec, "instruction"))
            text_field(row, col(spec, "input"), required=False)
            _response(row, col(spec, "output"))
        elif spec.format == "prompt_completion":
            text_field(row, col(spec, "prompt"))
            _response(row, col(spec, "completion"))
        elif spec.format == "completion":
            text_field(row, col(spec, "text"))
        elif spec.format == "classification":
            text_field(row, col(spec, "text"))
            text_field(row, col(spec, "text_pair"), required="text_pair" in spec.columns)
            _label(row, col(spec, "label"))
        elif spec.format in PREFERENCE_FORMATS:
            from .pairs import preference_parts  # pairs renders through this module's helpers

            preference_parts(row, spec)
    except RowProblem as e:
        return str(e)
    return None


def _label(row: dict, key: str) -> None:
    if key not in row or row[key] is None or str(row[key]).strip() == "":
        raise RowProblem(f"missing field '{key}'")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RowProblem(f"field '{key}' should be a label (text or integer), got {type(value).__name__}")


def render_row(row: dict, spec: DataSpec, plan: RenderPlan, tokenizer) -> Rendered:
    """alpaca, chat and prompt_completion rows."""
    if spec.format == "chat":
        return render_chat(chat_messages(row, spec), tokenizer, plan.chat)
    if spec.format == "alpaca":
        instruction = text_field(row, col(spec, "instruction"))
        extra = text_field(row, col(spec, "input"), required=False) or ""
        response = _response(row, col(spec, "output"))
        if plan.chat is not None:
            user = instruction + (f"\n\n{extra}" if extra.strip() else "")
            return render_chat(_with_system(row, spec, user, response), tokenizer, plan.chat)
        return render_plain(_alpaca_prompt(plan.plain_template, instruction, extra), response, tokenizer, bos=plan.bos)
    if spec.format == "prompt_completion":
        prompt = text_field(row, col(spec, "prompt"))
        response = _response(row, col(spec, "completion"))
        if plan.chat is not None:
            return render_chat(_with_system(row, spec, prompt, response), tokenizer, plan.chat)
        return render_plain(_fill(plan.plain_template or "{prompt}", prompt=prompt), response, tokenizer, bos=plan.bos)
    raise ValueError(f"render_row does not handle format {spec.format}")


def _response(row: dict, key: str) -> str:
    text = text_field(row, key)
    if not text.strip():
        raise RowProblem(f"field '{key}' is empty: nothing to train")
    return text


def _with_system(row: dict, spec: DataSpec, user: str, response: str) -> list[dict]:
    system = text_field(row, col(spec, "system"), required=False) or spec.system_prompt
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def _fill(template: str, **values: str) -> str:
    # Single pass, so braces in the data (code, JSON) are never taken for placeholders.
    return re.sub(r"\{(instruction|input|prompt)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _alpaca_prompt(template: str | None, instruction: str, extra: str) -> str:
    if template in (None, "alpaca"):
        return _fill(ALPACA_WITH_INPUT if extra.strip() else ALPACA_NO_INPUT, instruction=instruction, input=extra)
    if extra.strip() and "{input}" not in template:
        raise RowProblem("the row has an input but data.prompt_template has no {input}")
    return _fill(template, instruction=instruction, input=extra)


# ---- chat rows: OpenAI messages, ShareGPT conversations, text transcripts, tools -> validated messages


def chat_messages(row: dict, spec: DataSpec) -> list[dict]:
    key = col(spec, "messages")
    if "messages" not in spec.columns and key not in row and "conversations" in row:
        key = "conversations"  # ShareGPT rows, found without configuration
    if key not in row:
        raise RowProblem(f"missing field '{key}'")
    raw = row[key]
    if spec.transcript_roles:
        if not isinstance(raw, str):
            raise RowProblem(f"field '{key}' should be a text transcript, got {type(raw).__name__}")
        messages = parse_transcript(raw, spec.transcript_roles)
    elif isinstance(raw, str):
        raise RowProblem(f"field '{key}' is text, not a list of turns (set data.transcript_roles to split transcripts)")
    elif not isinstance(raw, list):
        raise RowProblem(f"field '{key}' should be a list of turns, got {type(raw).__name__}")
    else:
        messages = [_turn(t, i, spec) for i, t in enumerate(raw, 1)]
    return _checked(_with_system_turn(row, spec, messages))


def _turn(turn, i: int, spec: DataSpec) -> dict:
    if not isinstance(turn, dict):
        raise RowProblem(f"turn {i} should be an object, got {type(turn).__name__}")
    role_key = col(spec, "role") if "role" in spec.columns else ("role" if "role" in turn else "from")
    content_key = col(spec, "content") if "content" in spec.columns else ("content" if "role" in turn else "value")
    if role_key not in turn:
        raise RowProblem(f"turn {i} has no '{role_key}' field")
    source = turn[role_key]
    role = spec.roles.get(source) if isinstance(source, str) else None
    role = role or (DEFAULT_ROLES.get(source.lower()) if isinstance(source, str) else None)
    if role is None:
        raise RowProblem(f"turn {i}: unknown role {source!r} (map it with data.roles)")
    content = turn.get(content_key)
    if not isinstance(content, str):
        what = "missing" if content is None else f"{type(content).__name__}, not text"
        raise RowProblem(f"turn {i}: '{content_key}' is {what}")
    return {"role": role, "content": content}


def parse_transcript(text: str, markers: dict[str, str]) -> list[dict]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> messages, with `markers` mapping speaker names to roles."""
    names = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
    parts = re.split(rf"(?:^|\n\n)({names}):[ \t]?", text)
    if parts[0].strip():
        raise RowProblem(f"transcript does not start with a speaker marker ({', '.join(markers)})")
    return [{"role": markers[name], "content": body.strip()} for name, body in zip(parts[1::2], parts[2::2])]


def _with_system_turn(row: dict, spec: DataSpec, messages: list[dict]) -> list[dict]:
    """Adds the row's system field (or data.system_prompt) when there is no system turn, and appends the tool
    schemas of a non-empty tools column to the first system turn."""
    tools = _tools_text(row, col(spec, "tools"))
    at = next((i for i, m in enumerate(messages) if m["role"] == "system"), None)
    if at is None:
        own = text_field(row, col(spec, "system"), required=False) or spec.system_prompt
        if own is None and tools is None:
            return messages
        messages, at = [{"role": "system", "content": own or ""}, *messages], 0
    if tools is not None:
        own = messages[at]["content"]
        block = spec.tools_prompt.replace("{tools}", tools)
        messages = [*messages]
        messages[at] = {"role": "system", "content": f"{own}\n\n{block}" if own else block}
    return messages


def _tools_text(row: dict, key: str) -> str | None:
    if key not in row or row[key] in (None, "", [], "[]"):
        return None
    tools = row[key]
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise RowProblem(f"field '{key}' is not valid JSON: {e.msg}") from None
    if not isinstance(tools, list):
        tools = [tools]
    if not tools:
        return None
    return "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)


def _checked(messages: list[dict]) -> list[dict]:
    first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first_answer is None:
        raise RowProblem("conversation has no assistant turn: nothing to train")
    if not any(m["role"] in ("user", "tool") for m in messages[:first_answer]):
        raise RowProblem(f"turn {first_answer + 1}: the assistant speaks before any user turn")
    for i, m in enumerate(messages, 1):
        if m["role"] == "assistant" and not m["content"].strip():
            raise RowProblem(f"turn {i}: empty assistant turn")
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[: last + 1]  # turns after the last reply are never trained; the reply is the eval reference
