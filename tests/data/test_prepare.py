"""prepare_data(recipe): the one entry to the data layer, the same from any working directory."""

from __future__ import annotations

import torch
from support.tiny_run import tiny_recipe, write_base, write_chat
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftkit.data.prepare import prepare_data
from peftkit.modeling.load import load_base
from peftkit.recipe import load_recipe, recipe_from_dict, recipe_to_yaml


def test_a_recipe_reads_the_same_files_from_any_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    base, data = write_base(project / "base"), write_chat(project / "chat.jsonl")
    recipe_file = project / "recipe.yaml"
    # data.path relative to the recipe's folder, as users write it
    recipe_file.write_text(recipe_to_yaml(tiny_recipe(base, data, project / "run")).replace(str(data), "chat.jsonl"))
    assert "chat.jsonl" in recipe_file.read_text() and str(data) not in recipe_file.read_text()
    monkeypatch.chdir(project)
    here = prepare_data(load_recipe("recipe.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    there = prepare_data(load_recipe(recipe_file))
    assert here.data.train == there.data.train and here.data.eval == there.data.eval and here.data.train


def test_a_pad_token_added_to_the_tokenizer_grows_the_models_embeddings(tmp_path):
    """A vocabulary with no usable pad gets a new one; the model loaded with that tokenizer has a row for it."""
    vocab = {"<eos>": 0, **{f"w{i}": i + 1 for i in range(40)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} <eos> {% endfor %}"
    folder = tmp_path / "base"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, eos_token_id=0)).save_pretrained(folder)
    tok.save_pretrained(folder)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join('{"messages": [{"role": "user", "content": "w1 w2"}, '
                            '{"role": "assistant", "content": "w3 w%d"}]}\n' % (i % 30 + 4) for i in range(12)))
    raw = tiny_recipe(folder, rows, tmp_path / "run").model_dump(mode="json")
    raw["data"]["chat_template"] = "tokenizer"
    recipe = recipe_from_dict(raw)
    tokenizer, data = prepare_data(recipe)
    assert tokenizer.pad_token_id == len(vocab) and data.train  # a new token, after the vocabulary
    model = load_base(recipe.model, tokenizer=tokenizer).model
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == len(vocab) + 1
