"""`deploylm import minilm-l6 --task feature-extraction` on the packaged all-MiniLM-L6-v2: its embeddings equal
sentence-transformers' computation (when sentence-transformers is installed, the library itself; otherwise mean
pooling + L2 norm in numpy over plain AutoModel's last_hidden_state of the packaged weights), they separate a
paraphrase from an unrelated sentence, and the ONNX export gives the same vectors."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from conftest import minilm_dir

pytestmark = pytest.mark.realmodel
SENTENCES = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def minilm_fe(tmp_path_factory):
    from deploylm import cli
    from deploylm.artifacts import Artifact

    out = tmp_path_factory.mktemp("minilm-fe") / "art"
    argv = sys.argv
    sys.argv = ["deploylm", "import", "minilm-l6", "--task", "feature-extraction", "--output", str(out)]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = argv
    assert exc.value.code in (0, None)
    return Artifact.open(out)


def reference_embeddings(texts) -> np.ndarray:
    if importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_numpy=True)
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    rows = []
    with torch.inference_mode():
        for t in texts:  # one at a time: no padding in the reference
            enc = tok(t, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state[0].numpy().astype(np.float64)
            mean = h.mean(axis=0)  # every token is real here, so the masked mean is the plain mean
            rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def test_manifest(minilm_fe):
    assert minilm_fe.task == "feature-extraction" and minilm_fe.max_length == 256
    assert minilm_fe.manifest["embedding"]["dimensions"] == 384
    assert minilm_fe.manifest["parent"]["model"] == "minilm-l6"


def test_embeddings_match_the_reference_and_separate_meanings(minilm_fe):
    from deploylm.evaluation import predict

    got = np.array([p["embedding"] for p in predict(minilm_fe, SENTENCES)])
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, reference_embeddings(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = got @ got.T
    assert cos[0, 1] > cos[0, 2] + 0.2 and cos[0, 1] > cos[1, 2] + 0.2, cos


def test_onnx_export_matches(minilm_fe, tmp_path):
    from deploylm.evaluation import load_tokenizer
    from deploylm.optimize.export_onnx import export_to_file
    from deploylm.runtime import open_runner
    from deploylm.runtime.batching import pad_batch
    from deploylm.runtime.ort_runner import OrtRunner
    from deploylm.tasks import get_task

    export_to_file(minilm_fe, tmp_path / "m.onnx")
    ort = OrtRunner(tmp_path / "m.onnx")
    tok = load_tokenizer(minilm_fe)
    feats, _ = get_task("feature-extraction").encode(SENTENCES, tok, minilm_fe.max_length)
    batch = pad_batch(feats, tok.pad_token_id, ort.input_names)
    np.testing.assert_allclose(ort.run(batch)["sentence_embedding"],
                               open_runner(minilm_fe).run(batch)["sentence_embedding"], atol=1e-4)


def sst2_dev_sentences() -> list[str]:
    from conftest import SHARED_DATA

    lines = (SHARED_DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.rsplit("\t", 1)[0] for line in lines if line.strip()]


def pipeline_normalizes(path) -> bool:
    """Whether the sentence-transformers pipeline of this directory ends in Normalize (modules.json)."""
    import json

    return any(m["type"].endswith(".Normalize") for m in json.loads((path / "modules.json").read_text()))


def test_parity_with_sentence_transformers_on_sst2_dev(minilm_fe):
    """The library itself (installed as a test dependency) on all 872 SST-2 dev sentences, batch 32 on both sides
    (Task.predict batches by 32)."""
    from sentence_transformers import SentenceTransformer

    from deploylm.evaluation import predict

    texts = sst2_dev_sentences()
    assert len(texts) == 872
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    assert model.max_seq_length == minilm_fe.max_length
    # all-MiniLM-L6-v2's own pipeline is Transformer -> Pooling(mean) -> Normalize: its plain encode() is the
    # normalised vector; a pipeline without Normalize would be compared with normalize_embeddings=True.
    want = model.encode(texts, batch_size=32, convert_to_numpy=True,
                        normalize_embeddings=not pipeline_normalizes(minilm_dir()))
    got = np.array([p["embedding"] for p in predict(minilm_fe, texts)])
    assert got.shape == want.shape == (872, 384)
    assert np.abs(got - want).max() <= 1e-5
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999


def test_dynamic_int8_passes_the_cosine_gate_on_sst2_dev(minilm_fe, tmp_path):
    """The real gate on all 872 SST-2 dev sentences with its default limits; the recorded min and mean are checked
    against the two artifacts' embeddings computed here through predict."""
    from deploylm.evaluation import predict
    from deploylm.optimize.gate import GateOptions
    from deploylm.optimize.quantize import quantize

    q = quantize(minilm_fe, tmp_path / "int8", "dynamic-int8", gate=GateOptions(data="sst2", allow_slower=True, rounds=1, bench_samples=64))
    m = q.metrics["sst2:dev"]
    assert m["samples"] == 872 and 0.95 <= m["cosine_min"] < 0.999 and 0.98 <= m["cosine_mean"] < 0.9999
    texts = sst2_dev_sentences()
    a = np.array([p["embedding"] for p in predict(minilm_fe, texts)], dtype=np.float64)
    b = np.array([p["embedding"] for p in predict(q, texts)], dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert m["cosine_min"] == pytest.approx(cos.min(), abs=1e-3)
    assert m["cosine_mean"] == pytest.approx(cos.mean(), abs=1e-4)
