"""Chat templates: the tokenizer's own, or a named one for bases that have none, and what ends a turn.

Rendering goes through `tokenizer.apply_chat_template(..., tokenize=False)` in every case, so a named template
behaves exactly like one shipped with a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundle import RowProblem

# Literal registry of named templates (jinja, HF chat-template conventions).
NAMED_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "zephyr": (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}

_PROBE_USER, _PROBE_ANSWER = "Probe question?", "Probe answer."


class TemplateProblem(RowProblem):
    """A conversation the template cannot render (per row), or a template that cannot be masked (at setup)."""


@dataclass(frozen=True)
class ChatFormat:
    """A resolved chat template. `end_of_turn`: the text that closes an assistant turn and is trained with it
    (e.g. "<|im_end|>"); None when the template closes turns with nothing special, in which case the EOS token
    is appended to each response."""

    name: str  # "tokenizer" or a NAMED_TEMPLATES key
    template: str
    end_of_turn: str | None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat_format(tokenizer, choice: str) -> ChatFormat:
    """`choice`: auto | tokenizer | a NAMED_TEMPLATES key (schema-validated)."""
    if choice in ("auto", "tokenizer") and has_chat_template(tokenizer):
        name, template = "tokenizer", tokenizer.chat_template
        if isinstance(template, dict):  # several named templates: use the default one
            template = template.get("default") or next(iter(template.values()))
    elif choice == "tokenizer":
        raise TemplateProblem("the tokenizer has no chat template; set data.chat_template to chatml, llama3 or zephyr")
    else:
        name = "chatml" if choice == "auto" else choice
        template = NAMED_TEMPLATES[name]
    fmt = ChatFormat(name, template, None)
    return ChatFormat(name, template, _find_end_of_turn(tokenizer, fmt))


def render_text(tokenizer, fmt: ChatFormat, messages: list[dict], *, generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=fmt.template, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as e:  # jinja raises TemplateError / TypeError / raise_exception(...) messages
        raise TemplateProblem(f"the {fmt.name} chat template refused this conversation: {e}") from None
    if not isinstance(text, str):
        raise TemplateProblem(f"the {fmt.name} chat template did not render text")
    return text


def _special_texts(tokenizer) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            specials.add(str(tok))
    if tokenizer.eos_token:
        specials.add(tokenizer.eos_token)
    return sorted(specials, key=len, reverse=True)


def _find_end_of_turn(tokenizer, fmt: ChatFormat) -> str | None:
    """Render a probe exchange and take the first special token after the answer (<|im_end|>, <|eot_id|>, </s>)."""
    messages = [{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ANSWER}]
    before = render_text(tokenizer, fmt, messages[:1], generation_prompt=True)
    full = render_text(tokenizer, fmt, messages, generation_prompt=False)
    if not full.startswith(before):
        raise TemplateProblem(
            f"the {fmt.name} chat template renders earlier turns differently once a reply follows, so responses "
            "cannot be masked exactly; set data.chat_template to chatml, llama3 or zephyr"
        )
    body = full[len(before):]
    at = body.find(_PROBE_ANSWER)
    tail = body[at + len(_PROBE_ANSWER):] if at >= 0 else body
    specials = _special_texts(tokenizer)
    hits = [(tail.find(s), s) for s in specials if s and s in tail]
    return min(hits)[1] if hits else None


def stop_token_ids(tokenizer, fmt: ChatFormat | None) -> tuple[int, ...]:
    """EOS plus the end-of-turn token when it is a single token."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if fmt is not None and fmt.end_of_turn:
        eot = tokenizer.encode(fmt.end_of_turn, add_special_tokens=False)
        if len(eot) == 1 and eot[0] not in ids:
            ids.append(int(eot[0]))
    return tuple(ids)
