"""deploylm distill through the real CLI: a tiny teacher distilled into a layer subset, the artifact predicted
with and fed to quantize; bad input is exit 2 with a one-paragraph message and nothing written."""

from __future__ import annotations

import json

import pytest
from cli_run import run_inprocess
from test_cli import assert_clean_error, run

from conftest import build_tiny_artifact, reference_predictions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_tiny_artifact(tmp_path_factory.mktemp("t") / "teacher", labels=["0", "1"], num_hidden_layers=4)


def test_distill_then_predict_then_quantize(teacher, sst2_dir, tmp_path):
    out = tmp_path / "student"
    extra = tmp_path / "extra.txt"
    extra.write_text("an unseen and lovely film\nflat and far too long\n")
    res = run("distill", "--teacher", teacher.path, "--student-layers", "2", "--data", sst2_dir, "--output", out,
              "--epochs", "1", "--batch-size", "16", "--learning-rate", "1e-3", "--max-length", "32",
              "--temperature", "3", "--alpha", "0.7", "--hidden-loss", "--extra-text", extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "accuracy=" in res.stdout and "[1, 3]" in res.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "distill" and m["parent"]["hash"] == teacher.hash
    assert m["config"]["temperature"] == 3 and m["config"]["alpha"] == 0.7 and m["config"]["hidden_loss"] is True
    assert m["distillation"]["layers_kept"] == [1, 3] and m["distillation"]["losses"] == ["kd", "hidden"]
    assert m["training"]["train_samples"] == 66

    res = run("predict", out, "a great and moving film 3", "--json")
    assert res.returncode == 0, res.stderr
    ((label, score),) = reference_predictions(out, ["a great and moving film 3"])
    pred = json.loads(res.stdout)[0]
    assert pred["label"] == label and pred["score"] == pytest.approx(score, abs=1e-5)

    res = run("quantize", out, "--method", "dynamic-int8", "--output", tmp_path / "int8", "--data", sst2_dir)
    if res.returncode == 0:  # a distilled artifact is an artifact like any other: the gate measured it
        q = json.loads((tmp_path / "int8" / "manifest.json").read_text())
        assert q["parent"]["path"] == str(out.resolve()) and q["method"] == "dynamic-int8"
    else:  # a tiny random model may be refused by the gate (parity, speed or metric), with its normal error
        assert_clean_error(res, "dynamic-int8", "No artifact was written")
        assert not (tmp_path / "int8").exists()


def test_a_distill_config_fed_back_reproduces_the_run(teacher, sst2_dir, tmp_path, capsys, monkeypatch):
    res = run_inprocess(capsys, monkeypatch, "distill", "--teacher", teacher.path, "--student-layers", "1", "--data", sst2_dir, "--output",
              tmp_path / "a", "--epochs", "1", "--max-length", "32")
    assert res.returncode == 0, res.stderr[-3000:]
    recorded = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]
    (tmp_path / "cfg.json").write_text(json.dumps(recorded))
    res = run_inprocess(capsys, monkeypatch, "distill", "--output", tmp_path / "b", "--config", tmp_path / "cfg.json")
    assert res.returncode == 0, res.stderr[-3000:]
    again = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert again["config"] == recorded and again["distillation"]["layers_kept"] == [3]


@pytest.mark.parametrize("args, says", [
    ([], "neither was given"),
    (["--student", "minilm-l6", "--student-layers", "2"], "both were given"),
    (["--student-layers", "9"], "the teacher has 4 layers"),
    (["--student-layers", "0"], "student_layers"),
    (["--student-layers", "2", "--data", "/nonexistent/data"], "does not exist"),
])
def test_bad_input_exits_2_and_writes_nothing(teacher, sst2_dir, tmp_path, capsys, monkeypatch, args, says):
    data = [] if "--data" in args else ["--data", sst2_dir]
    out = tmp_path / "out"
    res = run_inprocess(capsys, monkeypatch, "distill", "--teacher", teacher.path, *data, "--output", out, *args)
    assert_clean_error(res, says)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_a_student_of_another_task_is_refused(teacher, sst2_dir, tmp_path, capsys, monkeypatch):
    ner = build_tiny_artifact(tmp_path / "ner", "token-classification")
    res = run_inprocess(capsys, monkeypatch, "distill", "--teacher", teacher.path, "--student", ner.path, "--data", sst2_dir, "--output",
              tmp_path / "out")
    assert_clean_error(res, "same task and label set")
    assert not (tmp_path / "out").exists()
