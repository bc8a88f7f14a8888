"""Rendered text -> token ids and labels, with truncation made explicit."""

from __future__ import annotations

from dataclasses import dataclass

from .bundle import IGNORE, Rendered, RowProblem


@dataclass(frozen=True)
class Encoded:
    """`row` is None when nothing of the response survived truncation (the example is dropped)."""

    row: dict | None
    truncated: bool


def bos_text(tokenizer) -> str | None:
    """The BOS text to put in front of plain renders, when the tokenizer adds BOS to plain text by itself."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None or not tokenizer.bos_token:
        return None
    with_special = tokenizer.encode("a", add_special_tokens=True)
    return tokenizer.bos_token if with_special and with_special[0] == bos_id else None


def encode_rendered(r: Rendered, tokenizer, *, max_length: int, train_on_inputs: bool, with_prompt: bool) -> Encoded:
    """Tokenizes each segment on its own (add_special_tokens=False: the render holds every special token).
    labels: the token id where trained, IGNORE elsewhere; position 0 is never trained (nothing predicts it).
    with_prompt: also return "prompt_ids" (up to the final response) and "reference" for generation scoring."""
    pieces = tokenizer([s.text for s in r.segments], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    response: list[bool] = []  # token belongs to a response (trained without train_on_inputs)
    prompt_len = None
    for k, (seg, piece) in enumerate(zip(r.segments, pieces)):
        if k == r.prompt_end:
            prompt_len = len(ids)
        ids += piece
        labels += piece if (seg.trained or train_on_inputs) else [IGNORE] * len(piece)
        response += [seg.trained] * len(piece)
    truncated = len(ids) > max_length
    ids, labels, response = ids[:max_length], labels[:max_length], response[:max_length]
    if labels:
        labels[0] = IGNORE
    if not any(response[1:]):
        return Encoded(None, truncated)
    row = {"input_ids": ids, "labels": labels}
    if with_prompt and prompt_len is not None:
        row["prompt_ids"] = ids[:prompt_len]
        row["reference"] = r.reference
    return Encoded(row, truncated)


def chunk_documents(texts: list[str], tokenizer, *, max_length: int) -> list[dict]:
    """Continued pre-training: [BOS] doc EOS [BOS] doc EOS ... cut into max_length windows, every token trained
    (but the first of each window, which nothing predicts). A last window of one token is dropped."""
    if not texts:  # every row skipped as bad; a fast tokenizer called on [] raises IndexError
        return []
    bos = [tokenizer.bos_token_id] if bos_text(tokenizer) else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    # verbose=False: a whole book is one "sequence" here, longer than the model limit on purpose
    for piece in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        stream += bos + piece + eos
    rows = []
    for start in range(0, len(stream), max_length):
        window = stream[start : start + max_length]
        if len(window) < 2:
            continue
        rows.append({"input_ids": window, "labels": [IGNORE, *window[1:]]})
    return rows


def encode_classification(text: str, pair: str | None, label: int, tokenizer, *, max_length: int) -> Encoded:
    enc = tokenizer(text, pair, add_special_tokens=True)
    truncated = len(enc["input_ids"]) > max_length
    if truncated:  # re-encode so the closing special tokens ([SEP]) survive
        enc = tokenizer(text, pair, add_special_tokens=True, truncation=True, max_length=max_length)
    row = {"input_ids": list(enc["input_ids"]), "labels": int(label)}
    if "token_type_ids" in enc:
        row["token_type_ids"] = list(enc["token_type_ids"])
    return Encoded(row, truncated)


def encode_preference(answers: list[Rendered], desirable: bool | None, tokenizer, *, max_length: int,
                      with_prompt: bool) -> Encoded:
    """One prompt with its rendered answers -> a pair row (two answers) or an unpaired row (one, with
    `desirable`). Each answer's sequence is cut to max_length on its own; the pair is dropped when either answer
    loses every trained token. The prompt tokens are the same in every answer (checked)."""
    encoded = [encode_rendered(r, tokenizer, max_length=max_length, train_on_inputs=False, with_prompt=True)
               for r in answers]
    truncated = any(e.truncated for e in encoded)
    if any(e.row is None for e in encoded):
        return Encoded(None, truncated)
    prompts = [e.row.pop("prompt_ids") for e in encoded]
    reference = encoded[0].row.pop("reference")
    for e in encoded[1:]:
        e.row.pop("reference")
    if any(p != prompts[0] for p in prompts[1:]):
        # a template that renders a prompt differently depending on the answer cannot be compared token by token
        raise RowProblem("the answers tokenize to different prompts (the chat template depends on the answer)")
    if desirable is None:
        row = {"chosen": encoded[0].row, "rejected": encoded[1].row, "prompt_len": len(prompts[0])}
    else:
        row = {**encoded[0].row, "desirable": desirable, "prompt_len": len(prompts[0])}
    if with_prompt:
        row["prompt_ids"], row["reference"] = prompts[0], reference
    return Encoded(row, truncated)
