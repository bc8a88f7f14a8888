"""train.batch_size: auto — the largest micro-batch whose measured worst-case peak fits the memory cap, with
grad_accum keeping train.effective_batch; the run records the choice and its measurements."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.tiny_run import tiny_recipe, write_base, write_long_chat

import peftkit
import peftkit.training.trainer  # noqa: F401  imported before any peak is read: on CPU the peak is the process's
from peftkit.errors import RecipeError
from peftkit.training.batch_size import (
    CPU_PEAK_MARGIN_SHARE, choose_batch_size, divisors, predicted_peak_mb, search_batch_size,
)
from peftkit.training.probe import prepare_workload
from peftkit.recipe import recipe_from_dict


MINIMAL = {"name": "x", "model": {"base": "b"}, "data": {"path": "d.jsonl", "format": "chat"}}
TB = 2**40


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    return write_base(root / "base"), write_long_chat(root / "long.jsonl")


def auto_recipe(assets, run_dir, effective: int, **train):
    base, chat = assets
    return tiny_recipe(base, chat, run_dir, data={"max_length": 256}, eval={"metrics": ["loss"], "before": False},
                       train={"batch_size": "auto", "effective_batch": effective, "max_steps": 2, **train})


@pytest.fixture(scope="module")
def roomy(assets, tmp_path_factory):
    """The search under a cap nothing reaches: every divisor of 8 measured."""
    work = prepare_workload(auto_recipe(assets, tmp_path_factory.mktemp("roomy") / "run", 8))
    return search_batch_size(work, memory_cap_bytes=TB)


def test_auto_needs_the_effective_batch_it_keeps():
    with pytest.raises(RecipeError, match="effective_batch"):
        recipe_from_dict({**MINIMAL, "train": {"batch_size": "auto"}})
    with pytest.raises(RecipeError, match="effective_batch 12 is not batch_size 2 x grad_accum 4"):
        recipe_from_dict({**MINIMAL, "train": {"batch_size": 2, "grad_accum": 4, "effective_batch": 12}})
    assert recipe_from_dict({**MINIMAL, "train": {"batch_size": 2, "grad_accum": 4, "effective_batch": 8}})
    # grad_accum written beside auto (a recipe whose batch_size was overridden on the command line) is replaced
    assert recipe_from_dict({**MINIMAL, "train": {"batch_size": "auto", "grad_accum": 4, "effective_batch": 6}})


def test_candidates_divide_the_effective_batch_and_peaks_extrapolate():
    assert divisors(12) == [1, 2, 3, 4, 6, 12] and divisors(1) == [1]
    assert predicted_peak_mb([(2, 120.0), (4, 140.0)], 100.0, 8) == 180.0
    assert predicted_peak_mb([(2, 120.0)], 100.0, 4) == 140.0


def test_a_cap_nothing_reaches_takes_the_whole_effective_batch(roomy):
    assert (roomy.batch_size, roomy.grad_accum, roomy.effective_batch) == (8, 1, 8)
    assert [t["batch_size"] for t in roomy.tried] == [1, 2, 4, 8] and all(t["fits"] for t in roomy.tried)
    assert roomy.recipe.train.batch_size == 8 and roomy.measurement.batch_size == 8


def test_a_cap_below_batch_one_is_one_line_naming_the_key(assets, tmp_path):
    with pytest.raises(RecipeError, match="train.batch_size: auto: 1 example per micro-batch does not fit") as err:
        search_batch_size(prepare_workload(auto_recipe(assets, tmp_path / "run", 4)), memory_cap_bytes=2**20)
    assert "\n" not in str(err.value)


# On CPU the peak is the process's resident set: the search and the run it sizes share one fresh process, as in
# `peftkit train` (inside a long test session, earlier tests' heap moves both figures unpredictably). The run's
# peak must stay under the cap although it starts from another heap than its probe did: the margin's job.
CHILD = """
import json, sys
from pathlib import Path
import peftkit
import peftkit.training.trainer
from support.tiny_run import tiny_recipe
from peftkit.training.batch_size import CPU_PEAK_MARGIN_SHARE, search_batch_size
from peftkit.training.probe import prepare_workload
base, chat, out = map(Path, sys.argv[1:4])
def recipe(run_dir):
    return tiny_recipe(base, chat, run_dir, data={"max_length": 256}, eval={"metrics": ["loss"], "before": False},
                       train={"batch_size": "auto", "effective_batch": 16, "max_steps": 2})
roomy = search_batch_size(prepare_workload(recipe(out / "roomy")), memory_cap_bytes=2**40)
peaks = {t["batch_size"]: t["peak_mb"] for t in roomy.tried}
assert peaks[16] > peaks[1] * (1 + CPU_PEAK_MARGIN_SHARE) + 20, peaks  # batch memory shows beyond the margin
cap = int(peaks[16] * 2**20)  # batch 16 measured again needs the margin on top: it does not fit
result = peftkit.train(recipe(out / "run"), memory_cap_bytes=cap)
print(json.dumps({"cap": cap, "steps": result.metrics.train.steps, "run_dir": str(result.run_dir),
                  "train_mb": result.metrics.train.peak_memory["train_mb"]}))
"""


def test_a_smaller_cap_picks_a_smaller_batch_trains_to_the_end_under_it_and_records_the_choice(assets, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, assets), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    cap, run_dir = child["cap"], Path(child["run_dir"])
    written = yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]
    meta = json.loads((run_dir / "meta.json").read_text())["batch_size"]
    assert child["steps"] == 2
    assert written["batch_size"] == meta["batch_size"] and written["grad_accum"] == meta["grad_accum"]
    assert written["batch_size"] * written["grad_accum"] == written["effective_batch"] == 16
    assert written["batch_size"] < 16 and meta["tried"][0]["batch_size"] == 1
    assert meta["measurement"]["peak_mb"] * (1 + CPU_PEAK_MARGIN_SHARE) * 2**20 <= cap
    assert not meta["tried"][-1]["fits"] and "% for the resident set's variation" in meta["tried"][-1]["why"]
    assert child["train_mb"] * 2**20 <= cap
    # a resumed run keeps the recorded batch (the batch order depends on it) without measuring again
    work = prepare_workload(auto_recipe(assets, tmp_path / "run", 16))
    again = choose_batch_size(work.recipe, work.hardware, work.precision, tokenizer=None, rows=[], label_names=None,
                              config=None, resume_from=run_dir, memory_cap_bytes=1)
    assert (again.batch_size, again.grad_accum) == (meta["batch_size"], meta["grad_accum"])
    assert json.loads(json.dumps(again.to_dict())) == meta


def test_bench_refuses_auto_by_name():
    from peftkit.benchmark.peer import comparison_problems

    recipe = recipe_from_dict({**MINIMAL, "train": {"batch_size": "auto", "effective_batch": 8}})
    assert [p.key for p in comparison_problems(recipe)] == ["train.batch_size"]
