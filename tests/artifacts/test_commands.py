"""merge/export as the CLI calls them: refusals before any work, all-or-nothing writes, and what each format holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from gguf import GGUFReader
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftkit.data.templates import NAMED_TEMPLATES
from peftkit.errors import ModelError, RunDirError
from peftkit.artifacts import card
from peftkit.artifacts.commands import export, merge
from peftkit.modeling.fingerprint import fingerprint_folder


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("merged", "export"))
    return dest


def _edit(path: Path, change) -> None:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    else:
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data))


def _no_leftovers(folder: Path) -> bool:
    return not any(".partial-" in p.name or ".old-" in p.name for p in folder.iterdir())


def test_a_changed_base_is_refused_naming_both_fingerprints(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")
    recorded = json.loads((run / "meta.json").read_text())["base"]["fingerprint"]
    base = Path(yaml.safe_load((run / "recipe.yaml").read_text())["model"]["base"])
    changed = shutil.copytree(base, tmp_path / "base-changed")
    weights = changed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one weight, in a sampled region
    weights.write_bytes(bytes(data))
    _edit(run / "recipe.yaml", lambda r: r["model"].update(base=str(changed)))

    for call in (lambda: merge(run), lambda: export(run, format="adapter")):
        with pytest.raises(ModelError) as err:
            call()
        message = str(err.value)
        assert recorded in message and fingerprint_folder(changed) in message and str(changed) in message
        assert "\n" not in message
    assert not (run / "merged").exists() and not (run / "export").exists()


@pytest.mark.parametrize("missing", ["adapter/adapter_model.safetensors", "meta.json", "adapter/adapter_config.json"])
def test_missing_run_files_are_named(fp32_run, tmp_path, missing):
    run = _copy_run(fp32_run, tmp_path / "run")
    (run / missing).unlink()

    with pytest.raises(RunDirError, match=Path(missing).name):
        export(run, format="gguf")


def test_existing_output_is_refused_unless_forced(fp32_run, tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")

    with pytest.raises(RunDirError, match="already exists; use --force"):
        export(fp32_run, format="adapter", out=out)
    assert (out / "mine.txt").read_text() == "keep me"

    export(fp32_run, format="adapter", out=out, force=True)
    assert not (out / "mine.txt").exists() and (out / "README.md").is_file()
    assert _no_leftovers(tmp_path)


def test_an_interrupted_export_leaves_the_previous_output_and_no_partial_files(fp32_run, tmp_path, monkeypatch):
    def interrupted(run):
        raise KeyboardInterrupt

    out = tmp_path / "adapter"
    monkeypatch.setattr(card, "adapter_card", interrupted)  # fails after the weights and tokenizer are written

    with pytest.raises(KeyboardInterrupt):
        export(fp32_run, format="adapter", out=out)
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "previous.txt").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        export(fp32_run, format="adapter", out=out, force=True)
    assert [p.name for p in out.iterdir()] == ["previous.txt"] and _no_leftovers(tmp_path)


def test_adapter_export_is_a_loadable_peft_folder_with_a_model_card(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")

    result = export(run, format="adapter")

    out = run / "export" / "adapter"
    assert result.out == out and result.check is None
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= set(result.files)
    readme = (out / "README.md").read_text()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert f"base_model: {recipe['model']['base']}" in readme and "PeftModel.from_pretrained" in readme
    assert "exact_match" in readme and "rank 4" in readme and "format `chat`" in readme

    base = recipe["model"]["base"]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        exported = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)(ids).logits
        original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run / "adapter")(ids).logits
    assert torch.equal(exported, original)
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(run / "adapter").chat_template
    assert (out.stat().st_mode & 0o777) != 0o700  # published with the usual permissions, not mkdtemp's


def test_a_named_chat_template_the_run_trained_with_is_exported(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")
    _edit(run / "meta.json", lambda m: m["data"].update(template="zephyr"))

    export(run, format="adapter", out=tmp_path / "adapter")

    assert AutoTokenizer.from_pretrained(tmp_path / "adapter").chat_template == NAMED_TEMPLATES["zephyr"]


def test_gguf_export_writes_the_model_and_an_ollama_modelfile(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")

    result = export(run, format="gguf", gguf_type="q8_0")

    out = run / "export" / "gguf-q8_0"
    assert result.out == out and set(result.files) == {"tiny-q8_0.gguf", "Modelfile", "merge_check.json"}
    assert result.check.passed
    reader = GGUFReader(out / "tiny-q8_0.gguf")
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama" and "<|im_start|>" in fields["tokenizer.chat_template"]
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./tiny-q8_0.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert _no_leftovers(out.parent)


def test_export_merged_is_the_merge_at_its_default_place(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")

    result = export(run, format="merged", dtype="fp32")

    assert result.out == run / "merged" and "model.safetensors" in result.files and result.check.passed
    with pytest.raises(RunDirError, match="already exists"):
        merge(run)


def test_a_classification_run_is_not_merged(fp32_run, tmp_path):
    run = _copy_run(fp32_run, tmp_path / "run")
    _edit(run / "recipe.yaml", lambda r: r["model"].update(task="sequence_classification"))
    _edit(run / "recipe.yaml", lambda r: r["data"].update(format="classification"))

    with pytest.raises(ModelError, match="export --format adapter works"):
        merge(run)


def test_unknown_choices_are_refused_before_any_work(fp32_run, tmp_path):
    from peftkit.errors import PeftkitError

    with pytest.raises(PeftkitError, match="--gguf-type"):
        export(fp32_run, format="gguf", gguf_type="q4_k", out=tmp_path / "g")
    with pytest.raises(PeftkitError, match="--dtype"):
        merge(fp32_run, dtype="int4", out=tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [".", "..", "adapter", "adapter/sub"])
def test_an_output_that_would_replace_the_run_is_refused_even_with_force(fp32_run, tmp_path, where):
    run = _copy_run(fp32_run, tmp_path / "run")

    with pytest.raises(RunDirError, match="would replace the run directory or its adapter"):
        export(run, format="adapter", out=run / where, force=True)
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "meta.json").is_file()
