"""deploylm prune through the real CLI: bad input is exit 2 with a clear message and nothing written; a good run
writes a pruned artifact that predict (and a pipeline's next stage) takes; unstructured pruning says what it buys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_run import run_inprocess
from conftest import build_tiny_artifact
from test_cli import assert_clean_error, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_prune import write_sst2  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune-cli")
    art = build_tiny_artifact(root / "cls", labels=["0", "1"], seed=2, num_hidden_layers=3, num_attention_heads=4)
    return art, write_sst2(root / "data")


@pytest.mark.parametrize("args, says", [
    (["--heads", "1.5"], "heads: Input should be less than 1"),
    (["--ffn", "-0.2"], "ffn: Input should be greater than or equal to 0"),
    ([], "Nothing to prune"),
    (["--layers", "3"], "would remove every layer"),
    (["--heads", "0.9"], "every layer keeps at least one"),
    (["--heads", "0.5", "--mode", "fast"], "mode: Input should be 'recover' or 'retraining-free'"),
    (["--heads", "0.5", "--data", "/nonexistent/data"], "/nonexistent/data"),
])
def test_bad_input_exits_2_and_writes_nothing(env, tmp_path, capsys, monkeypatch, args, says):
    art, data = env
    res = run_inprocess(capsys, monkeypatch, "prune", art.path, "--output", tmp_path / "out", *(["--data", data] if "--data" not in args else []),
              *args)
    assert_clean_error(res, says)
    assert list(tmp_path.iterdir()) == []


def test_prune_recover_then_predict_and_pipeline(env, tmp_path):
    art, data = env
    out = tmp_path / "pruned"
    res = run("prune", art.path, "--heads", "0.5", "--ffn", "0.4", "--layers", "1", "--data", data, "--output", out,
              "--recover-epochs", "1", "--distill-from-parent", "--batch-size", "16", "--importance-samples", "32",
              "--max-length", "32", "--seed", "3")
    assert res.returncode == 0, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert "pruned (structured)" in text and "parameters:" in text and "dev recovered" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "prune" and manifest["config"]["recover_epochs"] == 1
    assert manifest["training"]["distilled_from_parent"] is True
    assert sum(s["heads"] for s in manifest["pruning"]["shapes"]) == 4  # 8 heads in the 2 layers kept, half go

    res = run("predict", out, "a great and moving film 3", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["label"] in ("0", "1")

    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"workdir: {tmp_path / 'pipe'}\ninput: {out}\nsteps:\n"
                    f"  - prune: {{unstructured: 0.5, data: {data}}}\n  - eval: {{data: {data}}}\n")
    res = run("pipeline", pipe)
    assert res.returncode == 0, res.stdout + res.stderr
    second = json.loads((tmp_path / "pipe" / "01-prune" / "manifest.json").read_text())
    assert second["parent"]["path"] == str(out.resolve()) and second["pruning"]["sparsity"] == 0.5
    assert second["pruning"]["shapes"] == manifest["pruning"]["shapes"]  # pruning a pruned artifact keeps its shapes


def test_unstructured_says_it_is_not_faster(env, tmp_path):
    art, data = env
    res = run("prune", art.path, "--unstructured", "0.5", "--data", data, "--output", tmp_path / "sparse")
    assert res.returncode == 0, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert "sparsity 50.0%" in text and "dense kernels run no faster" in text and "zip deflate" in text
