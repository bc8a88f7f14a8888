"""The canary audit: canaries are a function of (seed, n) and half of them join the training rows; the attack's
advantage is the best threshold's TPR - FPR; peftkit eval --privacy-audit reports it per run, with the DP bound for
a private run, and refuses a run trained without canaries."""

import json

import pytest
from support.tiny_run import tiny_recipe, write_base, write_chat

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.privacy.audit import attack_advantage, canaries, privacy_audit
from peftkit.data.prepare import prepare_data


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_base(root / "base"), write_chat(root / "chat.jsonl")


def test_attack_advantage():
    assert attack_advantage([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]) == 1.0  # every member below every non-member
    assert attack_advantage([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert attack_advantage([0.1, 5.0], [1.0, 2.0]) == 0.5


def test_canaries_are_reproducible_and_trained_on(assets, tmp_path):
    base, data = assets
    recipe = tiny_recipe(base, data, tmp_path / "run", train={"canaries": 4})
    tokenizer, bundle = prepare_data(recipe)
    a, b = canaries(tokenizer, recipe, like=bundle.train[0]), canaries(tokenizer, recipe, like=bundle.train[0])
    assert a == b and len(a[0]) == len(a[1]) == 4 and a[0] != a[1]
    assert set(a[0][0]) == set(bundle.train[0])  # shaped like a prepared row


def test_privacy_audit_reports_each_run(assets, tmp_path):
    base, data = assets
    plain = peftkit.train(tiny_recipe(base, data, tmp_path / "plain", train={"canaries": 6, "max_steps": 4})).run_dir
    private = peftkit.train(tiny_recipe(base, data, tmp_path / "dp", train={
        "canaries": 6, "max_steps": 4, "privacy": {"noise_multiplier": 1.0}})).run_dir
    rows = privacy_audit([str(plain), str(private)])
    assert [r.private for r in rows] == [False, True] and all(r.canaries == 6 for r in rows)
    assert rows[0].epsilon is None and rows[1].epsilon > 0 and 0 < rows[1].bound <= 1
    assert all(0 <= r.advantage <= 1 and 0 <= r.auc <= 1 for r in rows)
    assert json.loads((private / "meta.json").read_text())["privacy"]["rows"] == 18 + 6  # canaries count as rows
    assert main(["eval", str(plain), "--compare", str(private), "--privacy-audit", "--json"]) == 0
    assert len(json.loads((plain / "privacy_audit.json").read_text())["runs"]) == 2


def test_a_run_without_canaries_is_refused(assets, tmp_path):
    base, data = assets
    run = peftkit.train(tiny_recipe(base, data, tmp_path / "run", train={"max_steps": 1})).run_dir
    with pytest.raises(PeftkitError, match="trained without canaries"):
        privacy_audit([str(run)])
