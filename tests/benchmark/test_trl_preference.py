"""The preference peer: TRL's own trainers on exactly peftkit's pair ids, scored by peftkit's pair metrics; and the
settings both routes must share (objective, beta, ...) checked so that a mismatch is refused."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from support.tiny_run import tiny_recipe, write_base

from peftkit.benchmark.peer import comparison_problems
from peftkit.benchmark.record import (
    RouteRun,
    expected_reference,
    matched_preference,
    preference_digest,
    preference_parts,
)
from peftkit.benchmark.runner import check_settings, expected_settings
from peftkit.data.collate import collate_pairs
from peftkit.data.prepare import prepare_data
from peftkit.errors import PeftkitError
from peftkit.modeling.tokens import IGNORE_INDEX
from peftkit.recipe import recipe_from_dict
from peftkit.training.batches import Batches

pytest.importorskip("trl")

PAIR_METRICS = {"loss", "rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy",
                "preference_accuracy", "logps_chosen", "logps_rejected"}


@pytest.fixture(scope="module")
def make_recipe(tmp_path_factory):
    """A 2-step preference recipe on the tiny 4-bit Llama (bf16 written out: the same dtypes on every CPU)."""
    root = tmp_path_factory.mktemp("pairs")
    base, pairs = write_base(root / "base"), root / "pairs.jsonl"
    with pairs.open("w") as fh:  # the right sum chosen, a refusal rejected: learnable in a step or two
        for i in range(24):
            a, b = i % 7, (3 * i) % 5
            fh.write(json.dumps({"prompt": f"add {a} and {b}", "chosen": f"{a} + {b} = {a + b}",
                                 "rejected": "I do not know."}) + "\n")

    def make(objective: str = "dpo", **train):
        return tiny_recipe(base, pairs, root / "run",
                           model={"dtype": "bfloat16", "quantization": {"bits": 4, "compute_dtype": "bfloat16"}},
                           data={"format": "preference"}, eval={"metrics": ["loss"]},
                           train={"objective": objective, "max_steps": 2, "warmup_steps": 1, **train})

    return make


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """The bench runs each route in a process of its own; here they share one, and TRL's trainers leave accelerate's
    process-wide state set to bf16, which a later peftkit Accelerator(mixed_precision='no') may not change."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _trained_span(seq: dict) -> tuple[list[int], list[int]]:
    """peftkit's sequence up to its last trained token, and the positions that carry log-probabilities."""
    last = max(i for i, x in enumerate(seq["labels"]) if x != IGNORE_INDEX)
    return seq["input_ids"][: last + 1], [i for i, x in enumerate(seq["labels"]) if x != IGNORE_INDEX]


def test_dpo_trainer_receives_exactly_peftkits_ids(make_recipe, tmp_path):
    from peftkit.benchmark.trl_preference import build_peer, check_received

    recipe = make_recipe("dpo")
    peer = build_peer(recipe, tmp_path)
    rows = prepare_data(recipe).data.train
    batch = peer.trainer.data_collator(list(peer.trainer.train_dataset)[:3])  # TRL's own collator: chosen, rejected
    ours = collate_pairs(rows[:3], pad_id=0)
    for i, seq in enumerate([r["chosen"] for r in rows[:3]] + [r["rejected"] for r in rows[:3]]):
        ids, trained = _trained_span(seq)
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :n].tolist() == ids == ours["input_ids"][i, : len(ids)].tolist()
        assert batch["completion_mask"][i].nonzero().squeeze(1).tolist() == trained
    # a changed id anywhere is caught: check_received compares every column of every row
    bad = [dict(r) for r in peer.fed]
    bad[5] = {**bad[5], "rejected_ids": bad[5]["rejected_ids"][:-1] + [bad[5]["rejected_ids"][-1] + 1]}
    with pytest.raises(PeftkitError, match="column rejected_ids, row 5"):
        check_received(peer.trainer, bad, "dpo")


@pytest.mark.parametrize("objective", ["orpo", "simpo"])
def test_experimental_trainers_receive_exactly_peftkits_ids(make_recipe, tmp_path, objective):
    from peftkit.benchmark.trl_preference import build_peer

    recipe = make_recipe(objective)
    peer = build_peer(recipe, tmp_path)
    rows = prepare_data(recipe).data.train
    held = peer.trainer.train_dataset
    for i, row in enumerate(rows):
        for side in ("chosen", "rejected"):
            ids, trained = _trained_span(row[side])
            assert held[i][f"{side}_input_ids"] == ids  # no BOS or EOS added, nothing re-tokenized
            labels = held[i][f"{side}_labels"]
            assert [k for k, x in enumerate(labels) if x != IGNORE_INDEX] == trained


def test_kto_reads_peftkits_batches_in_order(make_recipe, tmp_path):
    from peftkit.benchmark.trl_preference import kto_items

    recipe = make_recipe("kto")
    rows = prepare_data(recipe).data.train
    items = kto_items(rows, recipe)
    t = recipe.train
    first = [rows[i] for i in Batches(len(rows), t.batch_size, t.seed).batch(0)]
    want = [preference_parts(r)[1][0] for r in first] + [preference_parts(r)[1][1] for r in first]
    assert [it["completion_ids"] for it in items[: 2 * t.batch_size]] == want
    assert [it["label"] for it in items[: 2 * t.batch_size]] == [True] * t.batch_size + [False] * t.batch_size
    assert len(items) == 2 * t.batch_size * t.max_steps * t.grad_accum


@pytest.mark.parametrize("objective", ["dpo", "orpo", "simpo", "kto"])
def test_trl_route_trains_and_reports_pair_metrics(make_recipe, tmp_path, objective):
    from peftkit.benchmark.trl_preference import run_trl_preference

    recipe = make_recipe(objective)
    run = run_trl_preference(recipe, tmp_path)
    assert len(run.step_elapsed_s) == 2 and all(loss is not None and math.isfinite(loss) for loss in run.step_loss)
    for tokens, trained in zip(run.step_tokens, run.step_trained_tokens):
        assert tokens > trained > 0  # both sequences of each pair counted, only the answers trained
    assert set(run.eval_metrics) >= PAIR_METRICS and run.eval_loss == run.eval_metrics["loss"]
    assert 0 <= run.eval_metrics["preference_accuracy"] <= 1
    matched = run.settings["matched"]
    assert matched["preference"] == matched_preference(recipe, expected_reference(recipe))
    assert matched["data"]["examples_sha256"] == preference_digest(prepare_data(recipe).data.train)
    assert matched["train"]["batch_size"] == recipe.train.batch_size  # pairs per micro-batch, also for KTO
    assert not check_settings(recipe, {"trl": [run], "peftkit": [run]})


def test_peftkit_route_reads_the_runs_pair_metrics(make_recipe, tmp_path):
    from peftkit.benchmark.peftkit_route import run_peftkit

    recipe = make_recipe("dpo")
    run = run_peftkit(recipe, tmp_path)
    assert set(run.eval_metrics) >= PAIR_METRICS and run.eval_loss == run.eval_metrics["loss"]
    assert run.settings["matched"]["preference"] == {"objective": "dpo", "beta": 0.1, "label_smoothing": 0.0,
                                                     "reference": "adapter_off"}
    # step 1's counts: both sequences of each pair of peftkit's first micro-batch; trained = the answers' tokens
    rows = prepare_data(recipe).data.train
    first = [rows[i] for i in Batches(len(rows), recipe.train.batch_size, recipe.train.seed).batch(0)]
    seqs = [r[side] for r in first for side in ("chosen", "rejected")]
    assert run.step_tokens[0] == sum(len(s["input_ids"]) for s in seqs)
    assert run.step_trained_tokens[0] == sum(len(a) for r in first for a in preference_parts(r)[1])
    assert run.settings["matched"]["data"]["examples_sha256"] == preference_digest(rows)


def _with_preference(run: RouteRun, **changes) -> RouteRun:
    settings = json.loads(json.dumps(run.settings))
    settings["matched"]["preference"].update(changes)
    return replace(run, settings=settings)


@pytest.mark.parametrize("changes, key", [({"beta": 0.5}, "preference.beta"),
                                          ({"objective": "ipo"}, "preference.objective"),
                                          ({"reference": "precomputed"}, "preference.reference")])
def test_a_mismatched_objective_or_beta_is_flagged(make_recipe, changes, key):
    recipe = make_recipe("dpo")
    matched = {**expected_settings(recipe), "data": {"max_length": recipe.data.max_length, "examples_sha256": "x"}}
    run = RouteRun("peftkit", {"matched": matched, "defaults": {}}, [1.0], [1], [1], [0.7], 0.7, 1.0, 1.0,
                   "rss_peak", 1, 1.0)
    assert not check_settings(recipe, {"peftkit": [run], "trl": [run]})
    found = check_settings(recipe, {"peftkit": [run], "trl": [_with_preference(run, **changes)]})
    assert found and all(key in m for m in found)


def test_the_peer_refuses_to_train_another_objective(make_recipe, tmp_path, monkeypatch):
    from peftkit.benchmark import trl_preference

    recipe = make_recipe("dpo")
    wrong = trl_preference.objective_arguments(recipe) | {"beta": 0.5}
    monkeypatch.setattr(trl_preference, "objective_arguments", lambda r: wrong)
    with pytest.raises(PeftkitError, match=r"train.objective dpo .*beta: expected 0.1, got 0.5"):
        trl_preference.build_peer(recipe, tmp_path)


@pytest.mark.parametrize("train, adapter, key", [
    ({"objective": "dpo", "preference": {"label_smoothing": 0.1}}, {}, "train.preference.label_smoothing"),
    ({"objective": "dpo"}, {"init_from": "runs/sft"}, "adapter.init_from"),
])
def test_recipes_the_peer_cannot_mirror_are_refused(make_recipe, train, adapter, key):
    raw = make_recipe().model_dump(mode="json")
    raw["train"].update(train)
    raw["adapter"].update(adapter)
    assert [p.key for p in comparison_problems(recipe_from_dict(raw))] == [key]
    assert comparison_problems(make_recipe("simpo", preference={"label_smoothing": 0.1})) == []  # CPO has it
