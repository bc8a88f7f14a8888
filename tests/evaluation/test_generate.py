"""generate_batched on a tiny random Llama: batched greedy == one-at-a-time greedy."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftkit.errors import PeftkitError
from peftkit.evaluation.generate import generate_batched

SPECIALS = ["<pad>", "<eos>", "<bos>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz .,?")
PAD, EOS = 0, 1
PROMPTS = ["hello there", "a", "what is the capital of france?", "the cat sat", "xyz"]


def char_tokenizer(*, with_pad: bool) -> PreTrainedTokenizerFast:
    """One token per character; BPE without merges splits a text into its characters."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.decoder = decoders.Fuse()  # join tokens without spaces between them
    extra = {"pad_token": "<pad>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", bos_token="<bos>", **extra)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        pad_token_id=None,
        bos_token_id=2,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(config).eval()


def greedy_one(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Reference: argmax one token at a time on the unpadded prompt, full forward each step."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


def expected_text(tokenizer, tokens: list[int], stops: set[int]) -> str:
    cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tokenizer.decode(tokens[:cut], skip_special_tokens=True)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer(with_pad=True)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def references(model, prompt_ids):
    return [greedy_one(model, ids, 8) for ids in prompt_ids]


def test_tokenizer_is_one_token_per_character(tokenizer, prompt_ids):
    assert [len(ids) for ids in prompt_ids] == [len(p) for p in PROMPTS]
    assert tokenizer.decode(prompt_ids[2]) == PROMPTS[2]


def test_batched_greedy_equals_one_at_a_time_in_the_original_order(model, tokenizer, prompt_ids, references):
    # batch_size 3 over 5 prompts of lengths 11, 1, 30, 11, 3: two batches, both padded on the left.
    got = generate_batched(model, tokenizer, prompt_ids, max_new_tokens=8, batch_size=3, stop_token_ids=[])
    want = [expected_text(tokenizer, tokens, set()) for tokens in references]
    # The prompts must lead to different completions, or order could not be checked.
    assert len(set(want)) > 1
    assert got == want


def test_stop_token_cuts_the_completion(model, tokenizer, prompt_ids, references):
    # Pick as stop token the third token generated for the first prompt: it must end there.
    stop = references[0][2]
    assert stop not in references[0][:2] and stop != EOS  # so the cut lands at exactly 2 tokens
    got = generate_batched(model, tokenizer, prompt_ids, max_new_tokens=8, batch_size=2, stop_token_ids=[stop, EOS])
    want = [expected_text(tokenizer, tokens, {stop, EOS}) for tokens in references]
    assert got == want
    assert got[0] == tokenizer.decode(references[0][:2])
    assert len(got[0]) == 2  # one character per token, and the stop character is not in the text


def test_tokenizer_without_pad_token(model, prompt_ids, references):
    no_pad = char_tokenizer(with_pad=False)
    assert no_pad.pad_token_id is None
    got = generate_batched(model, no_pad, prompt_ids, max_new_tokens=8, batch_size=5, stop_token_ids=[PAD, EOS])
    # Id 0 is a stop token here, so padding must use another id; the mask makes it harmless.
    assert got == [expected_text(no_pad, tokens, {PAD, EOS}) for tokens in references]


def test_peft_wrapped_model_and_mode_restored(tokenizer, prompt_ids):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(len(tokenizer), seed=1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    peft_model.train()
    want = [expected_text(tokenizer, greedy_one(peft_model.eval(), ids, 6), {EOS}) for ids in prompt_ids]
    peft_model.train()
    got = generate_batched(peft_model, tokenizer, prompt_ids, max_new_tokens=6, batch_size=4, stop_token_ids=[EOS])
    assert got == want
    assert peft_model.training  # the caller's mode is back
    peft_model.eval()
    generate_batched(peft_model, tokenizer, prompt_ids[:1], max_new_tokens=1, batch_size=1, stop_token_ids=[EOS])
    assert not peft_model.training


def test_empty_inputs(model, tokenizer):
    assert generate_batched(model, tokenizer, [], max_new_tokens=4, batch_size=2, stop_token_ids=[EOS]) == []
    with pytest.raises(PeftkitError, match="prompt 1 has no tokens"):
        generate_batched(model, tokenizer, [[5], []], max_new_tokens=4, batch_size=2, stop_token_ids=[EOS])
