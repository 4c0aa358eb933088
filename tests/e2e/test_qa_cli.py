"""Extractive QA from the command line: fine-tune on SQuAD-format data (split by article, recorded), eval,
predict --question/--context, ONNX export and dynamic int8 with parity on both heads; bad input exits 2."""

from __future__ import annotations

import json

import pytest

from cli_run import run_inprocess
from conftest import build_tiny_artifact
from squad_data import write_squad


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny QA model fine-tuned on the generated articles (module-wide: a few seconds of training)."""
    from deploylm.config import FinetuneConfig
    from deploylm.train.finetune import finetune

    root = tmp_path_factory.mktemp("qa")
    base = build_tiny_artifact(root / "base", "extractive-qa", max_length=64)
    data = write_squad(root / "squadmini")
    cfg = FinetuneConfig(model=str(base.path), task="extractive-qa", data=str(data), epochs=2, learning_rate=1e-3,
                         batch_size=8, max_length=64)
    return finetune(cfg, root / "ft"), data


def test_finetune_records_the_article_split_and_squad_metrics(trained):
    art, _ = trained
    split = art.manifest["data_split"]
    assert split["by"] == "article" and len(split["train_articles"]) == 24
    (rec,) = art.metrics.values()
    assert set(rec) >= {"exact_match", "f1", "samples"} and 0 <= rec["f1"] <= 1
    assert art.labels == [] and art.task == "extractive-qa"


def test_eval_on_the_held_out_articles(capsys, monkeypatch, trained):
    art, data = trained
    res = run_inprocess(capsys, monkeypatch, "eval", art.path, "--data", data, "--split", "test")
    assert res.returncode == 0, res.stderr
    assert "exact_match=" in res.stdout and "f1=" in res.stdout and "(n=4)" in res.stdout


def test_predict_answers_each_question_from_the_context(capsys, monkeypatch, trained):
    art, _ = trained
    context = "The capital of Peru is Lima. It has 9 museums."
    res = run_inprocess(capsys, monkeypatch, "predict", art.path, "--question", "What is the capital of Peru?",
                        "--question", "How many museums does it have?", "--context", context, "--json")
    assert res.returncode == 0, res.stderr
    preds = json.loads(res.stdout)
    assert len(preds) == 2
    for p in preds:
        assert context[p["start"]:p["end"]] == p["answer"] and 0 <= p["score"] <= 1


@pytest.mark.parametrize("args, needle", [
    (["--question", "Who?"], "--context"),
    (["--context", "Bob did it."], "--question"),
    (["a plain text"], "question and a context"),
    (["--question", "Who?", "--context", "   "], "context is missing or empty"),
])
def test_bad_qa_input_exits_2(capsys, monkeypatch, trained, args, needle):
    art, _ = trained
    res = run_inprocess(capsys, monkeypatch, "predict", art.path, *args)
    assert res.returncode == 2
    assert needle in res.stderr


def test_a_classifier_given_a_question_says_so(capsys, monkeypatch, tiny_cls):
    res = run_inprocess(capsys, monkeypatch, "predict", tiny_cls.path, "--question", "Who?", "--context", "Bob.")
    assert res.returncode == 2 and "extractive-qa" in res.stderr


def test_export_and_int8_keep_both_heads_within_parity(trained, tmp_path):
    import onnxruntime as ort

    from deploylm.optimize.export_onnx import export
    from deploylm.optimize.gate import GateOptions
    from deploylm.optimize.quantize import quantize

    art, data = trained
    gate = GateOptions(allow_slower=True, allow_metric_drop=True, rounds=1, bench_samples=8, data=str(data))
    onnx_art = export(art, tmp_path / "onnx", gate=gate)
    names = [o.name for o in ort.InferenceSession(str(onnx_art.path / "model.onnx")).get_outputs()]
    assert names == ["start_logits", "end_logits"]
    assert set(onnx_art.manifest["parity"]["real"]["outputs"]) == {"start_logits", "end_logits"}
    # A looser bound than int8's default 0.5: a random tiny model's start/end logits over ~50 positions have
    # top-two gaps of about the size of its int8 error (measured 0.65-1.1 over two seeds); the decision check
    # (argmax agreement where the gap is clear) still applies as set. The real model is measured in BENCHMARKS.md.
    q = quantize(art, tmp_path / "int8", "dynamic-int8", gate=gate, parity_tolerance=1.5)
    parity = q.manifest["parity"]
    assert parity["passed"] and set(parity["random"]["outputs"]) == {"start_logits", "end_logits"}
    assert min(parity[k]["argmax_agreement"] for k in ("random", "real")) >= 0.9
    assert q.manifest["gate"]["metric"] == "f1"
