"""peftkit.planning.measure (over peftkit.training.probe): real optimizer steps on the recipe's longest examples,
nothing written; `plan --measure` sets them beside the estimate of the same batch."""

import pytest
from support.tiny_run import tiny_recipe, write_base, write_long_chat, write_pairs

from peftkit.data.prepare import prepare_data
from peftkit.hardware import detect
from peftkit.planning.compare import measure_plan
from peftkit.planning.measure import measure
from peftkit.training.probe import example_length, longest_rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    return write_base(root / "base"), write_long_chat(root / "long.jsonl"), write_pairs(root / "pairs.jsonl")


def test_measure_steps_the_longest_examples_and_writes_nothing(assets, tmp_path):
    base, chat, _ = assets
    recipe = tiny_recipe(base, chat, tmp_path / "run", data={"max_length": 256}, train={"batch_size": 3})
    m = measure(recipe, steps=2)
    longest = max(len(r["input_ids"]) for r in prepare_data(recipe).data.train)
    assert m.shape == (3, longest) and m.longest_tokens == longest and m.batch_size == 3
    assert m.steps == 2 and m.peak_mb > 0 and m.tokens_per_s > 0
    assert 0 < m.tensor_peak_mb < m.peak_mb  # the tensors alone: less than the whole process
    assert m.peak_kind == "rss_peak" and 0 < m.baseline_mb <= m.peak_mb  # CPU: the process-wide resident set
    assert m.device == "cpu" and m.cpu_isa == detect().isa() and not m.recompute  # read, not assumed
    assert not (tmp_path / "run").exists()


def test_preference_pairs_are_measured_as_two_sequences_each(assets, tmp_path):
    base, _, pairs = assets
    recipe = tiny_recipe(base, pairs, tmp_path / "run", data={"format": "preference"},
                         train={"objective": "dpo", "batch_size": 2}, eval={"metrics": ["loss"]})
    m = measure(recipe, steps=1)
    rows = prepare_data(recipe).data.train
    assert m.shape == (4, max(example_length(r) for r in rows)) and m.steps == 1


def test_longest_rows_come_longest_first_and_cycle_when_short():
    rows = [{"input_ids": [0] * n} for n in (3, 9, 5)]
    assert [len(r["input_ids"]) for r in longest_rows(rows, 2)] == [9, 5]
    assert [len(r["input_ids"]) for r in longest_rows(rows, 5)] == [9, 5, 3, 9, 5]
    pair = {"chosen": {"input_ids": [0] * 4}, "rejected": {"input_ids": [0] * 7}}
    assert example_length(pair) == 7


def test_plan_measure_compares_with_the_estimate_of_the_measured_batch(assets, tmp_path):
    base, chat, _ = assets
    recipe = tiny_recipe(base, chat, tmp_path / "run", data={"max_length": 256}, train={"batch_size": 2})
    got = measure_plan(recipe, steps=1)
    m = got.measurement
    assert f"data.max_length={m.longest_tokens}" in got.overrides and "train.batch_size=2" in got.overrides
    assert got.estimate.settings.tokens_per_step == 2 * m.longest_tokens  # the plan sized for the measured batch
    # the tensors' peak against held + train; on CPU the process's RSS peak against that plus the process baseline
    lines = got.estimate.lines
    assert got.estimate_bytes == sum(line.bytes for line in lines if line.phase in ("held", "train"))
    assert got.ratio == m.tensor_peak_mb * 2**20 / got.estimate_bytes > 0
    overhead = sum(line.bytes for line in lines if line.phase == "overhead")
    assert overhead > 0 and got.process_ratio == m.peak_mb * 2**20 / (got.estimate_bytes + overhead)
    assert got.to_dict()["measurement"]["shape"] == (2, m.longest_tokens)
    text = "\n".join(got.summary())
    assert f"batch 2 x {m.longest_tokens} tokens" in text and f"measured / estimate {got.ratio:.2f}" in text
    assert f"with the process baseline: {got.process_ratio:.2f}" in text
    # the responses' positions, fewer than the batch's (chat rows carry their prompts too)
    assert 0 < m.trained_positions < 2 * m.longest_tokens and f"{m.trained_positions:,} trained positions" in text


def test_a_packed_measurement_is_planned_as_one_row_of_the_measured_width(assets, tmp_path):
    base, chat, _ = assets
    recipe = tiny_recipe(base, chat, tmp_path / "run", data={"max_length": 256, "packing": True},
                         train={"batch_size": 3, "gradient_checkpointing": True})
    got = measure_plan(recipe, steps=1)
    rows, width = got.measurement.shape
    assert rows == 1 and width > got.measurement.longest_tokens  # three examples in one row
    assert "train.batch_size=1" in got.overrides and f"data.max_length={width}" in got.overrides
    assert got.estimate.settings.tokens_per_step == width


def test_batch_size_auto_is_measured_at_the_chosen_batch_with_the_tensors_peak(assets, tmp_path):
    base, chat, _ = assets
    recipe = tiny_recipe(base, chat, tmp_path / "run", data={"max_length": 256},
                         train={"batch_size": "auto", "effective_batch": 2})
    got = measure_plan(recipe, steps=1)
    m = got.measurement
    assert m.batch_size in (1, 2) and m.tensor_peak_mb is not None  # like the numbered batch: tensors to tensors
    assert got.ratio == m.tensor_peak_mb * 2**20 / got.estimate_bytes
