"""One real bench on the tiny 4-bit Llama (both routes, 3 steps, one run each), shared by the tests of this folder.

Its precision is written out (bf16 weights and 4-bit compute) rather than left at `auto`, so both routes run the same
dtypes on every CPU: auto would pick float32 on a CPU without AVX512-BF16/AMX."""

from __future__ import annotations

import pytest
from support.tiny_run import tiny_recipe, write_base, write_chat

from peftkit.recipe import recipe_to_yaml


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    base, data = write_base(root / "base"), write_chat(root / "chat.jsonl")
    model = {"dtype": "bfloat16", "quantization": {"bits": 4, "compute_dtype": "bfloat16"}}
    recipe = tiny_recipe(base, data, root / "run", model=model, train={"max_steps": 3, "warmup_steps": 1})
    path = root / "tiny.yaml"
    path.write_text(recipe_to_yaml(recipe))
    return root, path, recipe


@pytest.fixture(scope="session")
def tiny_bench(tiny_files):
    pytest.importorskip("trl")
    pytest.importorskip("matplotlib")
    from peftkit.benchmark import run_bench

    root, path, recipe = tiny_files
    return run_bench(path, repeats=1, out_dir=root / "results", name="tiny-bench"), recipe
