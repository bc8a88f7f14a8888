"""`peftkit data stats --json` and `peftkit data preview` run on every shipped recipe through the CLI."""

import json
from pathlib import Path

import pytest

from peftkit.cli import main

RECIPES = sorted(str(p) for p in Path("recipes").glob("*.yaml"))
SHARED = (Path("recipes") / "../../shared/data").resolve()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not next to the project")]


@pytest.mark.parametrize("recipe", RECIPES)
def test_stats_json_and_preview(recipe, capsys, smollm2_dir, minilm_dir):
    assert main(["data", "stats", recipe, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["examples"] > 0 and stats["eval"]["examples"] > 0
    assert 0 < stats["train"]["trained_tokens"] <= stats["train"]["tokens"]
    assert main(["data", "preview", recipe, "-n", "1", "--plain"]) == 0
    shown = capsys.readouterr().out
    assert "example 1" in shown and "[[" in shown  # trained spans are marked
