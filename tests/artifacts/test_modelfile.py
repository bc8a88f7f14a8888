"""The Ollama Modelfile: its Go TEMPLATE must prompt the model exactly as the HF chat template does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from peftkit.errors import PeftkitError
from peftkit.artifacts.modelfile import recognise_chat_template, write_modelfile

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# SmolLM2-Instruct's template, as its GGUF carries it: a default system turn when there is none.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Meta-Llama-3-8B-Instruct's template.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, on\ntwo lines?"},
    ],
]


def _parse(modelfile: Path) -> dict[str, object]:
    text = modelfile.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return {
        "from": re.search(r"^FROM (.+)$", text, re.M).group(1),
        "template": template.group(1) if template else None,
        "system": system.group(1) if system else None,
        "stops": [json.loads(v) for v in re.findall(r"^PARAMETER stop (.+)$", text, re.M)],
    }


def _render_go(go_template: str, messages: list[dict[str, str]]) -> str:
    """Render the Modelfile's Go template by transliterating its few constructs to Jinja.

    Go's `{{-` trims whitespace before it like Jinja's `{%-`, and neither trims after a plain `}}`.
    """
    jinja = (
        go_template.replace("{{- range .Messages }}", "{%- for m in messages %}")
        .replace("{{- end }}", "{%- endfor %}")
        .replace("{{ end }}", "{% endfor %}")
        .replace("{{ .Role }}", "{{ m.role }}")
        .replace("{{ .Content }}", "{{ m.content }}")
    )
    assert "{{ ." not in jinja and "{{- " not in jinja, f"untranslated Go construct in {go_template!r}"
    return jinja2.Environment(keep_trailing_newline=True).from_string(jinja).render(messages=messages)


def _render_hf(chat_template: str, messages: list[dict[str, str]]) -> str:
    rendered, _ = render_jinja_template(
        [messages], chat_template=chat_template, add_generation_prompt=True, bos_token="", eos_token=""
    )
    return rendered[0]


@pytest.mark.parametrize(
    ("chat_template", "stop", "default_system"),
    [(CHATML, "<|im_end|>", None), (SMOLLM2, "<|im_end|>", SMOLLM2_SYSTEM), (LLAMA3, "<|eot_id|>", None)],
    ids=["chatml", "smollm2", "llama3"],
)
def test_the_go_template_prompts_like_the_hf_template(tmp_path, chat_template, stop, default_system):
    path = write_modelfile(tmp_path, "model.gguf", chat_template=chat_template, stop_tokens=[stop])

    parsed = _parse(path)
    assert path == tmp_path / "Modelfile"
    assert parsed["from"] == "./model.gguf"
    assert parsed["system"] == default_system
    assert parsed["stops"] == [stop]
    for conversation in CONVERSATIONS:
        # Ollama puts SYSTEM in front of a conversation that has no system message of its own.
        sent = conversation
        if parsed["system"] is not None and conversation[0]["role"] != "system":
            sent = [{"role": "system", "content": parsed["system"]}, *conversation]
        assert _render_go(parsed["template"], sent) == _render_hf(chat_template, conversation)


def test_an_explicit_system_prompt_replaces_the_default(tmp_path):
    path = write_modelfile(tmp_path, "m.gguf", chat_template=SMOLLM2, stop_tokens=[], system="You answer in French.")

    assert _parse(path)["system"] == "You answer in French."


def test_the_end_of_turn_token_is_always_a_stop_and_stops_are_quoted(tmp_path):
    path = write_modelfile(tmp_path, "m.gguf", chat_template=CHATML, stop_tokens=["<|endoftext|>", 'say "end"'])

    assert _parse(path)["stops"] == ["<|endoftext|>", 'say "end"', "<|im_end|>"]
    assert 'PARAMETER stop "say \\"end\\""' in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile"]  # no partial file left


def test_recognised_styles():
    assert recognise_chat_template(CHATML).style == "chatml"
    assert recognise_chat_template(SMOLLM2).default_system == SMOLLM2_SYSTEM
    assert recognise_chat_template(LLAMA3).turn_end == "<|eot_id|>"


@pytest.mark.parametrize("chat_template", [MISTRAL, "{{ raise_exception('no') }}", "{{ messages[0]['content'] }}"])
def test_a_template_it_cannot_translate_is_an_error(tmp_path, chat_template):
    with pytest.raises(PeftkitError, match="not a ChatML or Llama 3 template"):
        write_modelfile(tmp_path, "m.gguf", chat_template=chat_template, stop_tokens=["</s>"])
    assert list(tmp_path.iterdir()) == []


def test_the_gguf_must_sit_next_to_the_modelfile(tmp_path):
    with pytest.raises(PeftkitError, match="gguf_name"):
        write_modelfile(tmp_path, "../elsewhere/m.gguf", chat_template=CHATML, stop_tokens=[])
