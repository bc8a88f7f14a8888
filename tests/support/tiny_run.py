"""Tiny, cache-free building blocks for tests that run the whole pipeline: a ChatML byte-level BPE
tokenizer, a 2-layer Llama saved as a local base folder, a chat jsonl file, and a recipe around them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftkit.data.templates import NAMED_TEMPLATES
from peftkit.recipe import Recipe, recipe_from_dict

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you!",
    "Write a function that adds two numbers: def add(a, b): return a + b",
    "user assistant system tool instruction input output response",
    "0123456789 {} [] () <> \"quotes\" 'single' - _ = + * / \\ | ; : , .",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tokenizer(chat_template: str | None = NAMED_TEMPLATES["chatml"]) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few sentences: every string encodes; ids 0-2 are the ChatML specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token=None,
                                   additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    fast.chat_template = chat_template
    return fast


def write_base(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 64, so bitsandbytes can quantize it) with the ChatML tokenizer."""
    tok = make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.2, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_chat(path: Path, n: int = 24) -> Path:
    """Chat rows whose answer is a fixed function of the question: learnable in a few steps."""
    with path.open("w") as fh:
        for i in range(n):
            a, b = i % 7, (3 * i) % 5
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": f"add {a} and {b}"},
                {"role": "assistant", "content": f"{a} + {b} = {a + b}"},
            ]}) + "\n")
    return path


def write_long_chat(path: Path, n: int = 16) -> Path:
    """Chat rows of growing length (about 90 to 250 tokens): batch memory that a resident set can see."""
    with path.open("w") as fh:
        for i in range(n):
            answer = " ".join(str((i * j) % 10) for j in range(40 + 5 * i))
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"count {i}"},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    return path


def write_pairs(path: Path, n: int = 24, *, refusals: bool = False) -> Path:
    """Preference pairs: the right sum chosen, rejected one off by one (subtle), or with `refusals` a refusal
    (a preference a tiny model learns and carries to held-out prompts in a few steps)."""
    with path.open("w") as fh:
        for i in range(n):
            a, b = i % 7, (3 * i) % 5
            rejected = "I do not know." if refusals else f"{a} + {b} = {a + b + 1}"
            fh.write(json.dumps({"prompt": f"add {a} and {b}", "chosen": f"{a} + {b} = {a + b}",
                                 "rejected": rejected}) + "\n")
    return path


def tiny_recipe(base: Path, data_file: Path, run_dir: Path, /, **sections) -> Recipe:
    raw = {
        "name": "tiny",
        "model": {"base": str(base), "dtype": "float32"},
        "adapter": {"rank": 4, "dropout": 0.0},
        "data": {"format": "chat", "path": str(data_file), "eval_fraction": 0.25, "max_length": 64},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 5e-3, "log_every": 1},
        "eval": {"metrics": ["loss", "exact_match"], "max_new_tokens": 8},
        "output": {"dir": str(run_dir)},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return recipe_from_dict(raw)
