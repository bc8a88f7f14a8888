"""Conversations and prompt/response pairs -> text segments marked trained or not.

A chat is rendered once in full; each assistant turn is located by rendering the conversation up to that turn
with the generation prompt (the prefix a model sees at inference) and up to the end of that turn. What lies
between is the response; it is trained up to and including the end-of-turn token, never the template text
that follows it. Segments are tokenized one by one, so the prompt tokens are exactly what inference feeds.
"""

from __future__ import annotations

from .bundle import Rendered, Segment
from .templates import ChatFormat, TemplateProblem, render_text


def render_chat(messages: list[dict], tokenizer, fmt: ChatFormat) -> Rendered:
    """`messages`: validated role/content dicts with at least one assistant turn, the last one an assistant's."""
    full = render_text(tokenizer, fmt, messages, generation_prompt=False)
    segments: list[Segment] = []
    cursor, prompt_end, reference = 0, None, None
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_text(tokenizer, fmt, messages[:i], generation_prompt=True)
        upto = render_text(tokenizer, fmt, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(before) and len(before) >= cursor):
            raise TemplateProblem(
                f"the {fmt.name} chat template renders turn {i + 1} differently once later turns follow, so it "
                "cannot be masked exactly; set data.chat_template to chatml, llama3 or zephyr"
            )
        body = upto[len(before):]
        trained = _trained_length(body, fmt.end_of_turn)
        segments.append(Segment(full[cursor : len(before)], False))
        prompt_end = len(segments)
        segments.append(Segment(body[:trained], True))
        if fmt.end_of_turn is None and tokenizer.eos_token:
            segments.append(Segment(tokenizer.eos_token, True))  # the template ends turns with nothing trainable
        cursor = len(before) + trained
        reference = message["content"].strip()
    segments.append(Segment(full[cursor:], False))
    return _without_empty(segments, prompt_end, reference)


def render_plain(prompt: str, response: str, tokenizer, *, bos: str | None) -> Rendered:
    """Raw text: [BOS] prompt (untrained), response + EOS (trained)."""
    segments = [Segment((bos or "") + prompt, False), Segment(response, True)]
    if tokenizer.eos_token:
        segments.append(Segment(tokenizer.eos_token, True))
    return _without_empty(segments, 1, response.strip())


def _trained_length(body: str, end_of_turn: str | None) -> int:
    """Characters of an assistant turn that carry loss: content through the end-of-turn token."""
    if end_of_turn:
        at = body.rfind(end_of_turn)
        if at >= 0:
            return at + len(end_of_turn)
    return len(body.rstrip())


def _without_empty(segments: list[Segment], prompt_end: int | None, reference: str | None) -> Rendered:
    kept: list[Segment] = []
    new_end = None
    for k, seg in enumerate(segments):
        if k == prompt_end:
            new_end = len(kept)
        if seg.text:
            kept.append(seg)
    return Rendered(tuple(kept), new_end, reference)
