"""An Ollama `Modelfile` next to an exported GGUF: FROM, a Go TEMPLATE, SYSTEM and stop tokens.

Ollama does not run the HF (Jinja) chat template; it needs a Go template. Rather than translate
Jinja, we recognise the template by what it renders: a probe conversation is rendered with
transformers' own renderer and compared, character for character, with what each known prompt
style (ChatML, Llama 3) would produce. A match yields that style's Go template; a default system
prompt that the template injects (SmolLM2 does) becomes the Modelfile's SYSTEM line.

A template that matches no style is an error, not a ChatML fallback: a model prompted in a format
it was not trained on still answers, just worse, and nobody notices. The error says what to do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from peftkit.errors import PeftkitError


@dataclass(frozen=True)
class _Style:
    name: str
    turn: str  # one message, with {role} and {content}
    prompt: str  # what opens the assistant's reply (add_generation_prompt)
    turn_end: str  # the token that ends a reply: always a stop token
    bos: str  # rendered by some templates; llama.cpp adds it itself, so it is stripped before comparing
    go_template: str  # the same format for Ollama; ends exactly where the HF rendering ends

    def render(self, messages: list[dict[str, str]]) -> str:
        return "".join(self.turn.format(**m) for m in messages) + self.prompt


_STYLES = (
    _Style(
        name="chatml",
        turn="<|im_start|>{role}\n{content}<|im_end|>\n",
        prompt="<|im_start|>assistant\n",
        turn_end="<|im_end|>",
        bos="",
        go_template=(
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
        ),
    ),
    _Style(
        name="llama3",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        turn_end="<|eot_id|>",
        bos="<|begin_of_text|>",
        go_template=(
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
            "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
    ),
)

# A conversation with every role, once with and once without a system message.
_WITH_SYSTEM = [
    {"role": "system", "content": "SYSTEM-PROBE"},
    {"role": "user", "content": "USER-PROBE-1"},
    {"role": "assistant", "content": "ASSISTANT-PROBE"},
    {"role": "user", "content": "USER-PROBE-2"},
]
_NO_SYSTEM = _WITH_SYSTEM[1:]


@dataclass(frozen=True)
class ChatFormat:
    """A chat template recognised as a known style, plus the system prompt it adds by default."""

    style: str
    go_template: str
    turn_end: str
    default_system: str | None


def recognise_chat_template(chat_template: str) -> ChatFormat:
    """The prompt style `chat_template` renders, or a PeftkitError saying it is not one we translate."""
    for style in _STYLES:
        with_system = _render(chat_template, _WITH_SYSTEM, style.bos)
        if with_system != style.render(_WITH_SYSTEM):
            continue
        no_system = _render(chat_template, _NO_SYSTEM, style.bos)
        expected = style.render(_NO_SYSTEM)
        if no_system == expected:
            return ChatFormat(style.name, style.go_template, style.turn_end, None)
        # Templates like SmolLM2's insert a fixed system turn when the conversation has none.
        head, tail = style.turn.format(role="system", content="\0").split("\0")
        injected = re.fullmatch(re.escape(head) + "(.*)" + re.escape(tail), no_system.removesuffix(expected), re.S)
        if no_system.endswith(expected) and injected:
            return ChatFormat(style.name, style.go_template, style.turn_end, injected.group(1))
    raise PeftkitError(
        "chat template: not a ChatML or Llama 3 template, so it cannot be written as an Ollama TEMPLATE "
        "(export without the Modelfile, or write its TEMPLATE by hand)"
    )


def write_modelfile(
    out_dir: Path, gguf_name: str, *, chat_template: str, stop_tokens: list[str], system: str | None = None
) -> Path:
    """Write `out_dir/Modelfile` for the GGUF `gguf_name` in the same folder; return its path.

    `system` overrides the template's default system prompt; the style's end-of-turn token is added
    to `stop_tokens` when missing.
    """
    out_dir = Path(out_dir)
    if Path(gguf_name).name != gguf_name or not gguf_name:
        raise PeftkitError(f"gguf_name: expected a file name inside {out_dir} (got {gguf_name!r})")
    fmt = recognise_chat_template(chat_template)
    system = system if system is not None else fmt.default_system
    if system is not None and '"""' in system:
        raise PeftkitError('system: a Modelfile cannot hold a system prompt containing """')
    stops = list(dict.fromkeys([*stop_tokens, fmt.turn_end]))

    lines = [
        "# Ollama Modelfile written by peftkit. Run: ollama create <name> -f Modelfile",
        f"# TEMPLATE is the {fmt.style} form of the model's chat template (checked by rendering both).",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{fmt.go_template}"""',
    ]
    if system is not None:
        lines.append(f'SYSTEM """{system}"""')
    # JSON string quoting is the escaping Ollama's parser reads in a double-quoted value.
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "Modelfile"
    partial = out_dir / "Modelfile.partial"
    try:
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _render(chat_template: str, messages: list[dict[str, str]], bos: str) -> str | None:
    """The HF rendering with the generation prompt, BOS stripped; None when the template fails on it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            [messages], chat_template=chat_template, add_generation_prompt=True, bos_token=bos, eos_token=""
        )
    except Exception:  # noqa: BLE001 -- any template error just means "not this style"
        return None
    return rendered[0].removeprefix(bos)
