"""feature-extraction (sentence embeddings) on a tiny random BERT: the runner's sentence_embedding is mean pooling
over the mask then L2 norm of plain transformers' last_hidden_state (reference computed here in numpy), padding
changes no row, the ONNX export gives the same vectors, and training entry points refuse clearly."""

import json

import numpy as np
import pytest

from cli_run import run_inprocess
from deploylm.errors import ConfigError
from tiny_encoders import tiny_encoder_dir

TEXTS = ["a", "a considerably longer sentence, which pads every other row of the batch a lot",
         "two words", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def tiny_fe(tmp_path_factory):
    from deploylm.models.embedding_import import import_embedder

    src = tiny_encoder_dir(tmp_path_factory.mktemp("fe-src") / "enc")
    return import_embedder(str(src), tmp_path_factory.mktemp("fe") / "art", max_length=64)


def numpy_reference(path, texts, max_length=64) -> np.ndarray:
    """Each text alone (no padding) through plain AutoModel; mean over tokens, then unit norm, in float64."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    rows = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**enc).last_hidden_state[0].numpy().astype(np.float64)
            mask = enc["attention_mask"][0].numpy().astype(np.float64)[:, None]
            mean = (h * mask).sum(0) / max(mask.sum(), 1e-9)
            rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def padded_batch(art, texts, names):
    from deploylm.evaluation import load_tokenizer
    from deploylm.runtime.batching import pad_batch
    from deploylm.tasks import get_task

    tok = load_tokenizer(art)
    feats, _ = get_task("feature-extraction").encode(texts, tok, art.max_length)
    return pad_batch(feats, tok.pad_token_id or 0, names)


def test_artifact_is_a_plain_encoder_with_the_task_in_its_manifest(tiny_fe):
    from safetensors import safe_open

    from deploylm.artifacts import Artifact

    art = Artifact.open(tiny_fe.path)
    assert art.task == "feature-extraction" and art.labels == [] and art.max_length == 64
    assert art.manifest["embedding"]["dimensions"] == 32
    assert art.manifest["embedding"]["parity"]["max_abs_diff"] <= 1e-5
    with safe_open(str(art.path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("encoder.layer.") for k in keys)
    assert not any("classifier" in k for k in keys)
    assert json.loads((art.path / "config.json").read_text())["architectures"] == ["BertModel"]


def test_torch_runner_equals_the_hand_computed_reference_and_padding_changes_no_row(tiny_fe):
    from deploylm.runtime import open_runner

    runner = open_runner(tiny_fe)
    assert runner.output_names == ("sentence_embedding",)
    assert runner.input_names == ("input_ids", "attention_mask", "token_type_ids")
    batch = padded_batch(tiny_fe, TEXTS, runner.input_names)
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    got = runner.run(batch)["sentence_embedding"]
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_reference(tiny_fe.path, TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the rows are not all alike (a pooling that ignored the input would still have unit norm)
    assert np.abs(got[0] - got[1]).max() > 1e-2


def test_predict_returns_one_embedding_per_text(tiny_fe):
    from deploylm.evaluation import predict

    preds = predict(tiny_fe, TEXTS)
    ref = numpy_reference(tiny_fe.path, TEXTS)
    assert [p["dimensions"] for p in preds] == [32] * len(TEXTS)
    np.testing.assert_allclose(np.array([p["embedding"] for p in preds]), ref, atol=1e-5)


def test_onnx_export_contains_the_pooling(tiny_fe, tmp_path):
    from deploylm.optimize.export_onnx import export_to_file
    from deploylm.runtime import open_runner
    from deploylm.runtime.ort_runner import OrtRunner

    export_to_file(tiny_fe, tmp_path / "m.onnx")
    ort = OrtRunner(tmp_path / "m.onnx", threads=1)
    assert ort.output_names == ("sentence_embedding",)
    batch = padded_batch(tiny_fe, TEXTS, ort.input_names)
    got = ort.run(batch)["sentence_embedding"]
    want = open_runner(tiny_fe).run(batch)["sentence_embedding"]
    assert got.shape == want.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got, numpy_reference(tiny_fe.path, TEXTS), atol=1e-4)


def test_export_stage_gates_on_parity_without_a_dataset(tiny_fe, tmp_path):
    from deploylm.optimize.export_onnx import export
    from deploylm.optimize.gate import GateOptions

    art = export(tiny_fe, tmp_path / "onnx", gate=GateOptions(allow_slower=True, rounds=1, bench_samples=16))
    assert art.format == "onnx" and art.task == "feature-extraction"
    parity = art.manifest["parity"]
    assert parity["passed"] and set(parity["real"]["outputs"]) == {"sentence_embedding"}
    assert parity["real"]["max_abs_diff"] < 1e-4
    assert art.manifest["gate"]["metric"] is None and art.metrics == {}


@pytest.mark.parametrize("call", [
    lambda t: t.label_set(["a", "b"]),
    lambda t: t.train_features(None, None, {}, 16),
    lambda t: t.collator(None),
    lambda t: t.trainer_metrics({}),
    lambda t: t.check_targets([], [], "dev"),
])
def test_training_entry_points_are_config_errors(call):
    from deploylm.tasks import get_task

    with pytest.raises(ConfigError, match="deploylm import"):
        call(get_task("feature-extraction"))


def test_score_and_labels_are_clear_errors(tiny_fe):
    from deploylm.tasks import get_task

    task = get_task("feature-extraction")
    with pytest.raises(ConfigError, match="no task metric"):
        task.score([], [])
    with pytest.raises(ConfigError, match="no labels"):
        task.load_model(str(tiny_fe.path), ["neg", "pos"])


# --- CLI -------------------------------------------------------------------------------------

def refuse_loading(monkeypatch):
    """Any model resolution or load from here on fails the test: the refusals must come first."""
    import deploylm.models.embedding_import as emb
    import deploylm.models.importer as dec

    def boom(*a, **k):
        raise AssertionError("a model was resolved or loaded before the error")

    monkeypatch.setattr(emb, "resolve_model", boom)
    monkeypatch.setattr(dec, "import_decoder", boom)
    monkeypatch.setattr(dec, "resolve_model", boom)


@pytest.mark.parametrize("spec,task,needles", [
    ("smollm2-135m", "feature-extraction", ["--task feature-extraction takes an encoder", "decoder"]),
    ("/nowhere/model.gguf", "feature-extraction", ["takes an encoder"]),
    ("minilm-l6", "sentence-similarity", ["Unknown task 'sentence-similarity'", "feature-extraction"]),
    ("minilm-l6", "classification", ["deploylm finetune --task classification"]),
])
def test_import_task_errors_exit_2_before_loading(capsys, monkeypatch, tmp_path, spec, task, needles):
    refuse_loading(monkeypatch)
    res = run_inprocess(capsys, monkeypatch, "import", spec, "--task", task, "--output", tmp_path / "out")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    text = " ".join(res.stderr.split())
    for n in needles:
        assert n in text, text
    assert not (tmp_path / "out").exists()


def test_cli_import_then_predict(capsys, monkeypatch, tmp_path):
    src = tiny_encoder_dir(tmp_path / "enc", seed=1)
    res = run_inprocess(capsys, monkeypatch, "import", src, "--task", "feature-extraction", "--output", tmp_path / "a")
    assert res.returncode in (0, None), res.stdout + res.stderr
    assert "feature-extraction" in res.stdout and "32 dimensions" in res.stdout
    res = run_inprocess(capsys, monkeypatch, "predict", tmp_path / "a", "two words", "Paris is the capital of France.")
    assert res.returncode in (0, None), res.stderr
    lines = [l for l in res.stdout.splitlines() if "dims" in l]
    assert len(lines) == 2 and all(l.startswith("32 dims [") for l in lines), res.stdout
    ref = numpy_reference(tmp_path / "a", ["two words"])[0]
    shown = [float(v) for v in lines[0].split("[", 1)[1].split(", ...]")[0].split(", ")]
    np.testing.assert_allclose(shown, ref[: len(shown)], atol=1e-4)
    res = run_inprocess(capsys, monkeypatch, "predict", tmp_path / "a", "two words", "--json")
    data = json.loads(res.stdout)
    assert data[0]["dimensions"] == 32 and len(data[0]["embedding"]) == 32
    np.testing.assert_allclose(data[0]["embedding"], ref, atol=1e-5)


def test_serve_loads_it_and_knows_its_dimension(tiny_fe):
    from deploylm.serving.engine import load_model

    model = load_model(tiny_fe.path, "emb")
    assert model.task.name == "feature-extraction" and model.output_shapes == {"sentence_embedding": (32,)}
