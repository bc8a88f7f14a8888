"""The merge: merged logits equal (base + adapter) logits; 4-bit runs merge into the dequantized weights; the
merge check passes on a right merge and fails on a wrong one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from peftkit.errors import ModelError
from peftkit.artifacts.check import MergeCheckFailed, check_rows, compare, reference_logprobs, tolerance_for
from peftkit.artifacts.commands import merge
from peftkit.artifacts.merge import dequantized_state_dict, load_merged, load_trained, merge_unquantized
from peftkit.rundir import read_run


def _eval_ids(run: Path, n: int = 4) -> list[list[int]]:
    """Chat prompts with answers, rendered by the run's own tokenizer."""
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    convs = [[{"role": "user", "content": f"add {a} and {b}"}, {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]
             for a, b in [(1, 2), (6, 4), (3, 3), (0, 5)][:n]]
    return [tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in convs]


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def _scaled_adapter(run: Path, dest: Path, factor: float) -> Path:
    """A copy of the run's adapter with every lora_B multiplied by `factor`: a merge of the wrong delta."""
    shutil.copytree(run / "adapter", dest)
    weights = load_file(dest / "adapter_model.safetensors")
    save_file({k: v * factor if "lora_B" in k else v for k, v in weights.items()}, dest / "adapter_model.safetensors")
    return dest


def test_fp32_merged_logits_equal_base_plus_adapter(fp32_run, tmp_path):
    result = merge(fp32_run, out=tmp_path / "merged", dtype="fp32")

    base_dir = read_run(fp32_run).recipe.model.base
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                          fp32_run / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    for ids in _eval_ids(fp32_run):
        expected = _logits(reference, ids)
        assert torch.allclose(_logits(merged, ids), expected, atol=1e-5, rtol=0)
        assert (_logits(plain, ids) - expected).abs().max() > 0.1  # the adapter really changes the output
    assert not any("lora" in k for k in load_file(tmp_path / "merged" / "model.safetensors"))

    check = json.loads((tmp_path / "merged" / "merge_check.json").read_text())
    assert check["passed"] and check == result.check.__dict__
    assert check["mean_kl"] < 1e-6 and check["top1_agreement"] == 1.0 and check["positions"] > 50


def test_merged_folder_carries_chat_template_stop_token_and_a_distinct_pad(fp32_run, tmp_path):
    merge(fp32_run, out=tmp_path / "merged", dtype="bf16")

    folder = tmp_path / "merged"
    tok = AutoTokenizer.from_pretrained(folder)
    gen = GenerationConfig.from_pretrained(folder)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert im_end in eos
    assert gen.pad_token_id is not None and gen.pad_token_id not in eos
    assert tok.chat_template == AutoTokenizer.from_pretrained(fp32_run / "adapter").chat_template
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                              add_generation_prompt=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    assert {f.name for f in folder.iterdir()} >= {"model.safetensors", "config.json", "generation_config.json",
                                                  "tokenizer.json", "merge_check.json"}


def test_4bit_run_merges_into_the_dequantized_weights(nf4_run):
    """The adapter corrected the NF4 weights, so the merge starts from exactly those, not the originals."""
    run = read_run(nf4_run)
    spec = run.recipe.model
    trained, _ = load_trained(spec, run.adapter_dir)
    rows = _eval_ids(nf4_run)
    reference = reference_logprobs(trained, rows)

    q_proj = trained.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    import bitsandbytes.functional as bnbf

    dequantized = dequantized_state_dict(trained.unload())["model.layers.0.self_attn.q_proj.weight"]
    original = load_file(Path(spec.base) / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(dequantized, bnbf.dequantize_4bit(q_proj.weight.data, q_proj.weight.quant_state).float())
    assert (dequantized - original).abs().max() > 1e-3  # NF4 really rounded these weights

    trained, base = load_trained(spec, run.adapter_dir)
    ours = merge_unquantized(trained, spec, base.source.path_or_id, run.adapter_dir)
    naive = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(spec.base, dtype=torch.float32),
                                      run.adapter_dir).merge_and_unload().eval()
    tol = tolerance_for(4, "fp32")
    good = compare(ours, rows, reference, tol, dtype="fp32", bits=4)
    drift = compare(naive, rows, reference, tol, dtype="fp32", bits=4)
    assert good.passed and good.mean_kl < 1e-3
    assert drift.mean_kl > 10 * good.mean_kl  # merging into the original weights drifts from what was trained


def test_4bit_merge_passes_its_check_in_fp32_and_bf16(nf4_run, tmp_path):
    result = merge(nf4_run, out=tmp_path / "merged")  # default dtype: the run's (float32 here)

    assert result.dtype == "fp32" and result.check.passed and result.check.quantization_bits == 4
    assert "4-bit" in result.check.tolerance_why
    bf16 = merge(nf4_run, out=tmp_path / "bf16", dtype="bf16")
    assert bf16.check.passed and bf16.check.mean_kl < bf16.check.max_mean_kl


@pytest.mark.parametrize("factor", [0.0, 3.0], ids=["adapter-dropped", "adapter-scaled"])
def test_check_fails_on_a_merge_of_the_wrong_adapter(fp32_run, tmp_path, factor):
    run = read_run(fp32_run)
    spec = run.recipe.model
    trained, base = load_trained(spec, run.adapter_dir)
    rows = check_rows([{"input_ids": ids} for ids in _eval_ids(fp32_run)])
    reference = reference_logprobs(trained, rows)
    wrong = _scaled_adapter(fp32_run, tmp_path / "wrong", factor)

    merged = merge_unquantized(trained, spec, base.source.path_or_id, wrong)
    report = compare(merged, rows, reference, tolerance_for(None, "fp32"), dtype="fp32", bits=None)

    assert not report.passed and report.mean_kl > 100 * report.max_mean_kl
    with pytest.raises(MergeCheckFailed, match="merge check FAILED: mean KL"):
        raise MergeCheckFailed(report, str(fp32_run))


def test_a_failed_check_publishes_nothing(fp32_run, tmp_path, monkeypatch):
    from peftkit.artifacts import check, commands

    impossible = check.Tolerance(max_mean_kl=-1.0, min_top1=1.0, why="test: no merge can pass")
    monkeypatch.setattr(commands, "tolerance_for", lambda *args: impossible)

    with pytest.raises(MergeCheckFailed, match="was not written"):
        merge(fp32_run, out=tmp_path / "merged", dtype="fp32")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging folder


def test_no_check_writes_without_measuring(fp32_run, tmp_path):
    result = merge(fp32_run, out=tmp_path / "merged", dtype="fp16", check=False)

    assert result.check is None and not (tmp_path / "merged" / "merge_check.json").exists()
    assert load_merged(tmp_path / "merged", read_run(fp32_run).recipe.model, "fp16").dtype == torch.float16


def test_pissa_merge_subtracts_the_principal_part_once(pissa_run, tmp_path):
    """PEFT re-runs the PiSSA init when the adapter loads (base := residual); the merge must not run it twice."""
    result = merge(pissa_run, out=tmp_path / "merged", dtype="fp32")

    assert result.check.passed and result.check.mean_kl < 1e-6


def test_prompt_learning_runs_have_nothing_to_merge(fp32_run, tmp_path):
    import yaml

    run = shutil.copytree(fp32_run, tmp_path / "run")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["adapter"].update(method="prompt_tuning", rank=16)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    with pytest.raises(ModelError, match="prompt_tuning learns virtual tokens"):
        merge(run)
    assert not (run / "merged").exists()
