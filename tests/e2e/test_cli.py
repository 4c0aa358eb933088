"""The CLI as the README uses it, run as a real subprocess: success paths and bad input
(exit code 2, one-paragraph message, no traceback, nothing written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_inprocess
from conftest import reference_predictions

pytestmark = pytest.mark.e2e
DEPLOYLM = [sys.executable, "-m", "deploylm.cli"]


def run(*args, cwd=None, env=None):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([*DEPLOYLM, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e, timeout=300)


def assert_clean_error(res, *needles):
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    text = " ".join(res.stderr.split())
    for n in needles:
        assert n in text, text


def test_finetune_predict_eval_inspect_pipeline(tiny_cls, sst2_dir, tmp_path):
    out = tmp_path / "cls"
    res = run("finetune", "--model", tiny_cls.path, "--data", sst2_dir, "--output", out, "--epochs", "3",
              "--batch-size", "8", "--learning-rate", "1e-3", "--max-length", "32")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "accuracy=" in res.stdout and str(out) in " ".join(res.stdout.split())

    res = run("predict", out, "a great and moving film 3", "--json")
    assert res.returncode == 0, res.stderr
    pred = json.loads(res.stdout)
    ((label, score),) = reference_predictions(out, ["a great and moving film 3"])
    assert pred[0]["label"] == label and pred[0]["score"] == pytest.approx(score, abs=1e-5)

    res = run("eval", out, "--data", sst2_dir, "--split", "train")
    assert res.returncode == 0, res.stderr
    assert "sst2mini:train" in json.loads((out / "manifest.json").read_text())["metrics"]

    res = run("inspect", out)
    assert res.returncode == 0 and "finetune" in res.stdout and "model.safetensors" in res.stdout

    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"workdir: {tmp_path / 'pipe'}\nsteps:\n  - finetune: {{model: {tiny_cls.path}, data: {sst2_dir}, "
                    "epochs: 1, batch_size: 16}\n  - eval: {data: " + str(sst2_dir) + "}\n")
    res = run("pipeline", pipe)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "pipe" / "01-finetune" / "manifest.json").is_file()


def test_ner_predict_prints_entity_spans(tiny_ner, conll_dir, tmp_path):
    out = tmp_path / "ner"
    res = run("finetune", "--model", tiny_ner.path, "--task", "token-classification", "--data", conll_dir,
              "--output", out, "--epochs", "1", "--batch-size", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    res = run("predict", out, "John lives in Paris .", "--json")
    assert res.returncode == 0, res.stderr
    pred = json.loads(res.stdout)[0]
    assert len(pred["tags"]) == 5
    for ent in pred["entities"]:
        assert "John lives in Paris ."[ent["start"]:ent["end"]] == ent["text"]


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--data", "{tmp}/nowhere"], ["does not exist"]),
        (["--data", "{odd}"], ["not in a layout"]),
        (["--data", "{sst2}", "--text-column", "review"], ["no column 'review'", "sentence, label"]),
        (["--data", "{sst2}", "--model", "no-such-alias-x/y/z"], ["neither a known alias", "minilm-l6"]),
        (["--data", "{sst2}", "--model", "bert-base-uncased"], ["Hub is offline"]),
        (["--data", "{sst2}", "--config", "{badcfg}"], ["learning_rat", "did you mean 'learning_rate'"]),
        (["--data", "{sst2}", "--output", "{taken}"], ["already exists", "--overwrite"]),
        (["--data", "{empty}"], ["empty"]),
        (["--data", "{badlabels}"], ["outside the model's label set", "neutral"]),
    ],
)
def test_bad_input_is_a_clear_error(args, needles, tiny_cls, sst2_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.parquet").write_bytes(b"x")
    (tmp_path / "bad.yaml").write_text("learning_rat: 0.1\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.tsv").write_text("sentence\tlabel\n")
    (tmp_path / "empty" / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    (tmp_path / "bl").mkdir()
    (tmp_path / "bl" / "train.tsv").write_text("sentence\tlabel\ngood\tpositive\nbad\tnegative\n")
    (tmp_path / "bl" / "dev.tsv").write_text("sentence\tlabel\nmeh\tneutral\n")
    subst = {"{tmp}": str(tmp_path), "{odd}": str(tmp_path / "odd"), "{sst2}": str(sst2_dir),
             "{badcfg}": str(tmp_path / "bad.yaml"), "{taken}": str(tmp_path / "taken"),
             "{empty}": str(tmp_path / "empty"), "{badlabels}": str(tmp_path / "bl")}
    args = [subst.get(a, a) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_cls.path)]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_inprocess(capsys, monkeypatch, "finetune", *args)
    assert_clean_error(res, *needles)
    assert not (tmp_path / "out").exists()


def test_tampered_artifact_is_refused(tiny_cls, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_cls.path, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    for cmd in (["predict", copy, "hello"], ["inspect", copy]):
        assert_clean_error(run(*cmd), "checksum", "model.safetensors")


def test_library_noise_goes_to_a_log_file_unless_verbose(tmp_path):
    from conftest import build_tiny_artifact

    art = build_tiny_artifact(tmp_path / "cls", labels=["0", "1"], seed=4)
    data = tmp_path / "sst2mini"
    data.mkdir()
    rows = ["sentence\tlabel"] + [f"{'good fun' if i % 2 else 'dull mess'} {i}\t{i % 2}" for i in range(32)]
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    logs = tmp_path / "logs"
    args = ["export", art.path, "--data", data, "--allow-slower", "--max-metric-drop", "100"]
    quiet = run(*args, "--output", tmp_path / "q", env={"DEPLOYLM_LOG_DIR": str(logs)})
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    logged = (logs / "export.log").read_text()
    assert "Warning" in logged  # torch's exporter warns; the warnings went to the file ...
    assert "Warning" not in quiet.stderr and str(logs / "export.log") in " ".join(quiet.stderr.split())  # ... named
    assert "Loading weights" not in quiet.stderr  # transformers' per-load progress bar
    loud = run("--verbose", *args, "--output", tmp_path / "v", env={"DEPLOYLM_LOG_DIR": str(logs)})
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "Warning" in loud.stderr and "Loading weights" in loud.stderr
