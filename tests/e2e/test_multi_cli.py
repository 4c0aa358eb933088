"""deploylm finetune --task multi through the real CLI: a bad --heads is exit 2 with a clear message and nothing
written; a good one trains, and predict prints every head's line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_cli import assert_clean_error, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_multi_task import heads_arg, write_data  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("heads, says", [
    ("sst2:sentiment", "task 'sentiment' cannot be a head"),
    ("nosuchset:classification", "does not exist"),
])
def test_bad_heads_exit_2_and_write_nothing(tiny_cls, tmp_path, heads, says):
    res = run("finetune", "--model", tiny_cls.path, "--task", "multi", "--heads", heads, "--output", tmp_path / "out")
    assert_clean_error(res, says)
    assert list(tmp_path.iterdir()) == []


def test_multi_finetune_then_predict(tiny_cls, tmp_path):
    dirs = write_data(tmp_path / "data")
    out = tmp_path / "out"
    res = run("finetune", "--model", tiny_cls.path, "--task", "multi", "--heads", heads_arg(dirs), "--output", out,
              "--epochs", "1", "--batch-size", "16", "--max-length", "32", "--max-train-samples", "12")
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [h["train_samples"] for h in manifest["heads"]] == [12, 12, 12]  # --max-train-samples is per head
    res = run("predict", out, "John lives in Paris .")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "John lives in Paris ." and [l.split(":")[0] for l in lines[1:]] == [
        "  sst2", "  ag_news", "  conll2003"]
    res = run("predict", out, "John lives in Paris .", "--json")
    assert list(json.loads(res.stdout)[0]) == ["sst2", "ag_news", "conll2003"]
