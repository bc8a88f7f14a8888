"""Tiny byte-level BPE tokenizers and tiny Llama / Qwen2 / Mistral folders, as a merge leaves them: what the GGUF
export tests write and read back (through transformers, and through llama.cpp when it is installed)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today?",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "def double(x):\n    return x * 2  # 12345",
]
PROBES = ["Hello world!", "  two  spaces\nand a newline 12345", "<|im_start|>user\nhi<|im_end|>", "ünïcödé 😀 naïve"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]
# Logit errors relative to the largest logit (~7 here). The random weights (std 0.2) amplify weight
# errors about 4x through the two layers: f16 rounding (2^-11) measured ~0.002, q8_0 (an int8 per
# weight and one f16 scale per 32, ~0.5% rms per weight) ~0.08, a missing Q/K permutation ~1.2.
F16_RTOL = 5e-3
Q8_RTOL = 0.15
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# The split regexes of Llama 3 and Qwen2 tokenizer.json files.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


def byte_level_tokenizer(split: str | None = None) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with ChatML special tokens; GPT-2 splitting unless `split` is given."""
    tok = Tokenizer(models.BPE())
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=CHATML,
    )


def save_model(folder: Path, tokenizer: PreTrainedTokenizerFast, arch: str = "llama", tied: bool = False) -> Path:
    """A tiny random model of `arch` saved with the tokenizer, as a merge would leave it."""
    sizes = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tokenizer) + 5,  # padded embedding, as many real models have
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Large enough that attention is far from uniform, so a wrong Q/K layout shows in the logits.
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }
    config_class, model_class = classes[arch]
    extra = {"sliding_window": None} if arch == "mistral" else {}
    model = model_class(config_class(**sizes, **extra)).eval()
    with torch.no_grad():  # HF initialises biases to zero; random ones prove they are carried over
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]
