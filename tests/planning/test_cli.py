"""`peftkit plan`: every shipped recipe planned offline, quickly, in-process; its JSON; its one-line errors."""

import json
import time
from pathlib import Path

import pytest

from peftkit.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL = sorted(str(p.relative_to(RECIPES.parent)) for p in [*RECIPES.glob("*.yaml"), *RECIPES.glob("gpu/*.yaml")])


@pytest.fixture(scope="module", autouse=True)
def warm():
    main(["plan", str(RECIPES / "quickstart.yaml"), "--json"])  # imports torch / transformers once


@pytest.mark.parametrize("recipe", ALL)
def test_plan_runs_offline_under_five_seconds(recipe, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    start = time.perf_counter()
    assert main(["plan", str(RECIPES.parent / recipe), "--json"]) == 0
    elapsed = time.perf_counter() - start
    plan = json.loads(capsys.readouterr().out)
    assert elapsed < 5, f"{recipe}: {elapsed:.1f} s"
    lines = {line["key"]: line["bytes"] for line in plan["lines"]}
    assert {"weights_kept", "adapter", "optimizer", "gradients", "activations", "logits", "eval", "overhead"} <= set(lines)
    assert plan["peak_bytes"] == plan["allocated_bytes"] + lines["overhead"]
    assert all(v >= 0 for v in lines.values()) and set(plan["fits"]) == {"8GB", "12GB", "16GB", "24GB", "48GB", "80GB"}


def test_the_table_names_each_line_the_peak_and_the_cards(capsys, monkeypatch):
    from peftkit import cli

    monkeypatch.setattr(cli.out, "width", 200)  # one row per line, as on a wide terminal
    assert main(["plan", str(RECIPES / "gpu/llama-3.1-8b-qlora.yaml"), "--memory", "8GB"]) == 0
    out = capsys.readouterr().out
    for text in ("NF4 + double quant", "activations (recompute on)", "logits", "peak", "fits: 8GB no", "12GB yes",
                 "8GB: does not fit", "train.batch_size=1 train.grad_accum=16"):
        assert text in out, text


def test_cpu_plans_this_machine(capsys):
    assert main(["plan", str(RECIPES / "quickstart.yaml"), "--device", "cpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["settings"]["device"] == "cpu" and not plan["settings"]["autocast"]
    assert next(x for x in plan["lines"] if x["key"] == "overhead")["label"].startswith("process baseline")


@pytest.mark.parametrize("args, message", [
    (["--memory", "twelve"], "error: --memory 'twelve': give a size like 12GB, 24GiB or 11000MB"),
    (["--memory=0GB"], "error: --memory '0GB'"),
    (["--config", "nowhere.json"], "error: --config nowhere.json: file not found"),
    (["model.base=someone/unknown-model"], "error: model.base 'someone/unknown-model': its config.json is neither"),
    (["train.optimizer=adamw_8bit", "--device", "cpu"], "error: train.optimizer: bitsandbytes 8-bit/paged optimizers"),
    (["adapter.rnk=8"], "adapter.rnk"),
])
def test_user_mistakes_are_one_line_with_exit_2(args, message, capsys):
    assert main(["plan", str(RECIPES / "quickstart.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("recipe", sorted((RECIPES / "gpu").glob("*.yaml")), ids=lambda p: p.stem)
def test_gpu_recipes_state_what_plan_says_and_fit_their_card(recipe, capsys):
    import re

    header = recipe.read_text().split("\nname:")[0]
    card, stated = re.search(r"Sized for an? (\d+) GB card.*?plan estimated ([\d.]+) GiB", header, re.S).groups()
    assert main(["plan", str(recipe), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert f"{plan['peak_bytes'] / 2**30:.1f}" == stated and plan["fits"][f"{card}GB"]
