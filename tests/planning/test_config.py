"""Where plan reads a base's config from, without weights or network; and the one-line errors when it cannot."""

import json

import pytest

from peftkit.errors import PeftkitError
from peftkit.planning.config import SHIPPED, read_config, shipped_ids
from peftkit.planning.inventory import build_inventory

HUB_BASES = ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-3B",
             "meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B",
             "Qwen/Qwen2.5-1.5B-Instruct", "mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3",
             "google/gemma-2-9b", "google/gemma-2-9b-it", "microsoft/Phi-3.5-mini-instruct"]
# published parameter counts (model cards / safetensors index totals)
PARAMS = {"meta-llama/Llama-3.1-8B": 8_030_261_248, "meta-llama/Llama-3.2-3B": 3_212_749_824,
          "Qwen/Qwen2.5-7B": 7_615_616_512, "Qwen/Qwen2.5-1.5B": 1_543_714_304,
          "mistralai/Mistral-7B-v0.3": 7_248_023_552, "google/gemma-2-9b": 9_241_705_984,
          "microsoft/Phi-3.5-mini-instruct": 3_821_079_552}


def test_every_listed_hub_base_ships_a_config():
    assert set(HUB_BASES) <= set(shipped_ids())


@pytest.mark.parametrize("base", sorted(PARAMS))
def test_shipped_configs_build_the_published_parameter_count(base):
    config = read_config(base)
    assert "shipped" in config.source
    assert build_inventory(config.values).total == PARAMS[base]


def test_hub_ids_are_matched_case_insensitively_and_zoo_upstreams_map_to_their_alias():
    assert read_config("QWEN/qwen2.5-7b").values["hidden_size"] == 3584
    assert read_config("HuggingFaceTB/SmolLM2-135M-Instruct").values["num_hidden_layers"] == 30


def test_a_local_folder_and_a_config_file(tmp_path):
    values = json.loads((SHIPPED / "smollm2-135m-instruct.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert read_config(str(tmp_path)).values == values
    assert read_config("anything/unknown", tmp_path / "config.json").values == values


@pytest.mark.parametrize("base, config_file, message", [
    ("someone/unknown-model", None, "model.base 'someone/unknown-model': its config.json is neither cached nor "
                                    "shipped with peftkit; pass --config FILE"),
    ("smollm2-135m-instruct", "missing.json", "--config missing.json: file not found"),
])
def test_one_line_errors(base, config_file, message):
    with pytest.raises(PeftkitError) as exc:
        read_config(base, config_file)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_a_file_that_is_not_a_model_config(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"hidden_size": 8}')
    with pytest.raises(PeftkitError, match="no model_type"):
        read_config("x/y", bad)
    bad.write_text("{not json")
    with pytest.raises(PeftkitError, match="not a readable JSON config"):
        read_config("x/y", bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PeftkitError, match="has no config.json"):
        read_config(str(tmp_path / "empty"))
