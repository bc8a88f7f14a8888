"""A pad token that is never a trained stop token."""

from __future__ import annotations

# Tried in order after the tokenizer's own pad and unk tokens: tokens that exist in common vocabularies and are
# not used to end a turn.
PAD_CANDIDATES = (
    "<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>", "<|reserved_special_token_0|>",
)
NEW_PAD = "<|pad|>"


def ensure_pad_token(tokenizer, *, stop_token_ids) -> int:
    """Returns the pad id, setting tokenizer.pad_token when it is missing or is one of `stop_token_ids`.

    Pad positions never carry loss (the collator masks them by position), but a pad equal to EOS makes
    generation stop on padding and hides whether a real EOS was emitted, so a distinct token is chosen: the unk
    token, a known pad-like token of the vocabulary, any other special token that is neither a stop token nor
    BOS, and as a last resort a new `<|pad|>` token (the caller must then resize the embeddings to len(tokenizer)).
    """
    stops = {int(i) for i in stop_token_ids}
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    current = tokenizer.pad_token_id
    if current is not None and int(current) not in stops:
        return int(current)
    vocab = tokenizer.get_vocab()
    bos = tokenizer.bos_token_id
    specials = [t for t in (getattr(tokenizer, "all_special_tokens", None) or []) if t in vocab]
    for token in (tokenizer.unk_token, *PAD_CANDIDATES, *specials):
        if token and token in vocab and vocab[token] not in stops and vocab[token] != bos:
            tokenizer.pad_token = token
            return int(vocab[token])
    tokenizer.add_special_tokens({"pad_token": NEW_PAD})
    return int(tokenizer.pad_token_id)
