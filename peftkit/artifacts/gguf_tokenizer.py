"""The tokenizer half of a GGUF export: llama.cpp's `tokenizer.*` keys, read from an HF folder.

Only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3, Qwen2) are supported. Their
`tokenizer.json` vocabulary is already spelled in the byte alphabet, so tokens and merges are copied
as they are; llama.cpp and transformers' GGUF loader rebuild the same tokenizer from them plus the
name of the pre-tokenizer (`tokenizer.ggml.pre`), which selects the split regex.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, TokenType

from peftkit.errors import PeftkitError

# The split regexes of the pre-tokenizers llama.cpp knows by name, as tokenizer.json spells them.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_PRE_NAMES = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}

# Vocabularies whose upstream GGUFs carry a pre-tokenizer name that their tokenizer.json does not
# show (an HF folder rebuilt from a GGUF has a plain ByteLevel pre-tokenizer). Keyed by the sha256
# of the tokens joined by "\n"; the value is what llama.cpp's own converter writes for them.
_KNOWN_VOCAB_PRE = {
    "d1f2ce856b324081b621d9e2e8dbd22879f462329f3fd4aa39fa758dddb2ce55": "smollm",  # SmolLM2
}


@dataclass(frozen=True)
class GgufVocab:
    """Everything the GGUF `tokenizer.*` keys hold, in file order (token id = position)."""

    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.tokens[self.eos_id]


def read_vocab(hf_dir: Path, vocab_size: int) -> GgufVocab:
    """The GGUF vocabulary of the tokenizer in `hf_dir`, padded to the model's `vocab_size` rows."""
    tokenizer_json = hf_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        if (hf_dir / "tokenizer.model").is_file():
            raise PeftkitError(
                f"{hf_dir / 'tokenizer.model'}: sentencepiece tokenizers are not supported for GGUF export yet "
                "(supported: byte-level BPE with a tokenizer.json)"
            )
        raise PeftkitError(f"{tokenizer_json}: missing; GGUF export needs the tokenizer saved next to the weights")
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or not _is_byte_level(spec):
        raise PeftkitError(
            f"{tokenizer_json}: only byte-level BPE tokenizers are supported for GGUF export yet "
            f"(got a {model.get('type')!r} model{' with byte fallback' if model.get('byte_fallback') else ''})"
        )

    tokens, token_types = _tokens(tokenizer_json, model["vocab"], spec.get("added_tokens") or [], vocab_size)
    pre = _pre_name(tokenizer_json, spec.get("pre_tokenizer"))
    if pre in ("gpt-2", "smollm"):
        pre = _KNOWN_VOCAB_PRE.get(hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest(), pre)
    # Merges are "a b" strings in older tokenizer.json files and [a, b] pairs in newer ones.
    merges = tuple(m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or [])

    hf = _load_hf_tokenizer(hf_dir)
    add_bos, add_eos = _added_specials(hf)
    return GgufVocab(
        model="gpt2",
        pre=pre,
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        bos_id=hf.bos_token_id,
        eos_id=hf.eos_token_id,
        unk_id=hf.unk_token_id,
        pad_id=hf.pad_token_id,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=hf.chat_template if isinstance(hf.chat_template, str) else None,
    )


def add_vocab(writer: GGUFWriter, vocab: GgufVocab) -> None:
    """Write the `tokenizer.*` keys."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    writer.add_token_merges(list(vocab.merges))
    for token_id, add in (
        (vocab.bos_id, writer.add_bos_token_id),
        (vocab.eos_id, writer.add_eos_token_id),
        (vocab.unk_id, writer.add_unk_token_id),
        (vocab.pad_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_add_space_prefix(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _is_byte_level(spec: dict[str, Any]) -> bool:
    return any(step.get("type") == "ByteLevel" for step in _steps(spec.get("pre_tokenizer")))


def _steps(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return list(pre_tokenizer.get("pretokenizers") or [])
    return [pre_tokenizer]


def _pre_name(tokenizer_json: Path, pre_tokenizer: dict[str, Any] | None) -> str:
    """The llama.cpp name of the pre-tokenizer that splits text as this tokenizer.json does."""
    steps = _steps(pre_tokenizer)
    kinds = [step.get("type") for step in steps]
    last = steps[-1] if steps else {}
    if kinds and kinds[-1] == "ByteLevel" and not last.get("add_prefix_space", False):
        if kinds == ["ByteLevel"] and last.get("use_regex", True):
            return "gpt-2"  # llama.cpp's name for the GPT-2 regex (its tokenizer model is "gpt2")
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and last.get("use_regex", True):
            return "smollm"  # llama.cpp's name for "each digit alone, then the GPT-2 regex"
        if kinds == ["Split", "ByteLevel"] and not last.get("use_regex", True):
            pattern = (steps[0].get("pattern") or {}).get("Regex")
            if pattern in _SPLIT_PRE_NAMES:
                return _SPLIT_PRE_NAMES[pattern]
    raise PeftkitError(
        f"{tokenizer_json}: pre_tokenizer {json.dumps(pre_tokenizer)[:200]} is not supported for GGUF export yet "
        "(supported: GPT-2 ByteLevel, SmolLM digits + ByteLevel, Llama 3 and Qwen2 split regexes)"
    )


def _tokens(
    tokenizer_json: Path, vocab: dict[str, int], added: list[dict[str, Any]], vocab_size: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Tokens and their llama.cpp types by id; ids the tokenizer never produces become `[PADn]` rows."""
    by_id: dict[int, tuple[str, int]] = {i: (t, TokenType.NORMAL) for t, i in vocab.items()}
    for entry in added:  # an added token wins over a vocab entry with the same id
        kind = TokenType.CONTROL if entry.get("special") else TokenType.USER_DEFINED
        by_id[int(entry["id"])] = (entry["content"], kind)
    largest = max(by_id, default=-1)
    if largest >= vocab_size:
        raise PeftkitError(
            f"{tokenizer_json}: token id {largest} does not fit the model's vocab_size {vocab_size} "
            "(config.json); resize the embeddings before exporting"
        )
    # Padding rows are named like llama.cpp's converter names them, so the count matches the embedding.
    rows = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(vocab_size)]
    return tuple(t for t, _ in rows), tuple(int(k) for _, k in rows)


def _load_hf_tokenizer(hf_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise PeftkitError(f"{hf_dir}: the tokenizer does not load ({err})") from err


def _added_specials(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS, measured rather than read from flags that differ per class."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos
