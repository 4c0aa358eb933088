"""quantize on a sentence-embedding artifact (tiny random BERT): the gate measures cosine similarity of the variant's
embeddings to the parent's over a corpus, records min and mean in the manifest, and refuses (GateError, nothing
written) below --min-cosine / --min-cosine-mean. Cosines are recomputed here from the two artifacts' own runners."""

from pathlib import Path

import numpy as np
import pytest

from cli_run import run_inprocess
from deploylm.errors import ConfigError, DataError, GateError
from deploylm.optimize.gate import GateOptions
from deploylm.optimize.quantize import quantize
from test_feature_extraction import tiny_encoder_dir

SENTENCES = ["a gripping , beautifully acted film", "a dull and tedious mess", "warm , funny and surprisingly moving",
             "the plot makes no sense whatsoever", "an utterly forgettable sequel .", "Paris is lovely in spring",
             "it is not the best movie ever , but the cast is charming", "boring"]
FAST = dict(allow_slower=True, rounds=1, bench_samples=16)  # speed is measured, never asserted, in unit tests


def write_corpus(d: Path, n_dev: int = 24, n_train: int = 16) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"] + [f"{SENTENCES[i % len(SENTENCES)]} {i}\t{i % 2}" for i in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from deploylm.models.embedding_import import import_embedder

    root = tmp_path_factory.mktemp("embgate")
    art = import_embedder(str(tiny_encoder_dir(root / "enc", seed=2)), root / "fe", max_length=64)
    return root, art, write_corpus(root / "corpus")


def corpus_texts(data: Path) -> list[str]:
    return [line.split("\t")[0] for line in (data / "dev.tsv").read_text().splitlines()[1:]]


def cosines_by_hand(parent, variant, texts) -> np.ndarray:
    """Each text alone through each artifact's runner (no padding), cosine in float64."""
    from deploylm.evaluation import load_tokenizer
    from deploylm.runtime import open_runner

    tok, rows = load_tokenizer(parent), []
    for art in (parent, variant):
        runner = open_runner(art)
        out = []
        for t in texts:
            enc = tok(t, truncation=True, max_length=parent.max_length, return_tensors="np")
            out.append(runner.run({k: v for k, v in enc.items() if k in runner.input_names})["sentence_embedding"][0])
        rows.append(np.array(out, dtype=np.float64))
    a, b = rows
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("method", ["dynamic-int8", "static-int8", "bf16"])
def test_variant_passes_and_records_cosine_min_and_mean(env, method):
    from deploylm.artifacts import Artifact

    root, art, data = env
    out = quantize(art, root / f"q-{method}", method, gate=GateOptions(data=str(data), **FAST), calibration_samples=8)
    q = Artifact.open(out.path)
    assert q.task == "feature-extraction" and q.manifest["parent"]["hash"] == art.hash
    assert q.format == ("transformers" if method == "bf16" else "onnx")
    want = cosines_by_hand(art, q, corpus_texts(data))
    metrics = q.metrics["corpus:dev"]
    assert metrics["samples"] == 24
    assert metrics["cosine_min"] == pytest.approx(want.min(), abs=2e-4)
    assert metrics["cosine_mean"] == pytest.approx(want.mean(), abs=2e-4)
    assert want.min() < 1.0 - 1e-7  # the variant really differs from its parent
    gate = q.manifest["gate"]
    assert gate["cosine"]["min"] == metrics["cosine_min"] and gate["cosine"]["texts"] == 24
    assert gate["cosine"]["min_allowed"] == 0.95 and gate["speed"]["variant_seq_per_s"] > 0
    assert q.manifest["config"]["min_cosine"] == 0.95 and q.manifest["config"]["min_cosine_mean"] == 0.98
    parity = q.manifest["parity"]
    assert parity["passed"] and parity["real"]["outputs"].keys() == {"sentence_embedding"}
    assert 0 < parity["random"]["max_abs_diff"] <= parity["tolerance"]["max_abs"]


def test_max_eval_samples_limits_the_corpus(env):
    root, art, data = env
    out = quantize(art, root / "q-limit", "dynamic-int8", gate=GateOptions(data=str(data), max_eval_samples=5, **FAST))
    assert out.metrics["corpus:dev"]["samples"] == 5 and out.manifest["gate"]["cosine"]["texts"] == 5
    want = cosines_by_hand(art, out, corpus_texts(data)[:5])
    assert out.metrics["corpus:dev"]["cosine_min"] == pytest.approx(want.min(), abs=2e-4)


def test_a_min_cosine_of_one_refuses_and_writes_nothing(env):
    root, art, data = env
    before = set(root.iterdir())
    with pytest.raises(GateError, match="below --min-cosine 1") as exc:
        quantize(art, root / "q-refused", "dynamic-int8", gate=GateOptions(data=str(data), min_cosine=1.0, **FAST))
    assert "No artifact was written" in str(exc.value) and "--min-cosine-mean" not in str(exc.value).split("Pass")[0]
    assert set(root.iterdir()) == before  # no output, no staging leftovers


def test_a_broken_variant_is_refused_by_the_default_thresholds(env, monkeypatch):
    """A bf16 'variant' whose weights are another random model's: parity loosened on purpose, the cosine refuses."""
    import deploylm.optimize.quantize as q

    root, art, data = env
    other = tiny_encoder_dir(root / "other-enc", seed=7)

    def wrong_weights(parent, dest):
        from deploylm.tasks import get_task

        get_task("feature-extraction").load_model(str(other)).backbone.save_pretrained(dest)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(parent.path).save_pretrained(dest)
        return {"backend": "torch", "dtype": "bfloat16"}

    monkeypatch.setattr(q, "_torch_bf16_files", wrong_weights)
    with pytest.raises(GateError, match="mean cosine similarity") as exc:
        quantize(art, root / "q-broken", "bf16", gate=GateOptions(data=str(data), **FAST), parity_tolerance=10.0)
    assert "below --min-cosine-mean 0.98" in str(exc.value) and "below --min-cosine 0.95" in str(exc.value)
    assert not (root / "q-broken").exists()


def test_default_corpus_is_sst2_dev_from_the_data_dir(env, monkeypatch, tmp_path):
    root, art, _ = env
    write_corpus(tmp_path / "sst2", n_dev=12)
    monkeypatch.setenv("DEPLOYLM_DATA_DIR", str(tmp_path))
    out = quantize(art, root / "q-default", "dynamic-int8", gate=GateOptions(**FAST))
    assert out.metrics["sst2:dev"]["samples"] == 12
    assert out.manifest["config"]["data"] == "sst2"  # the --config that reproduces the run names its corpus


def test_a_missing_corpus_fails_before_any_work(env, monkeypatch, tmp_path):
    import deploylm.optimize.quantize as q

    root, art, _ = env
    monkeypatch.setattr(q, "_ort_files", lambda *a, **k: pytest.fail("the variant was built before the data error"))
    with pytest.raises(DataError, match="does not exist"):
        quantize(art, tmp_path / "q", "dynamic-int8", gate=GateOptions(data=str(tmp_path / "nowhere"), **FAST))
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("field", ["min_cosine", "min_cosine_mean"])
def test_thresholds_outside_minus_one_to_one_are_config_errors(field):
    with pytest.raises(ConfigError, match="cosine similarity in \\[-1, 1\\]"):
        GateOptions(**{field: 1.5})


def test_cli_reports_the_cosine_and_refuses_with_exit_code(env, capsys, monkeypatch, tmp_path):
    root, art, data = env
    common = ["--data", data, "--allow-slower", "--max-eval-samples", 8]
    res = run_inprocess(capsys, monkeypatch, "quantize", art.path, "--output", tmp_path / "ok", *common)
    assert res.returncode in (0, None), res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert "cosine to the parent on 8 dev texts: min 0.9" in text and "(allowed 0.95 / 0.98)" in text
    res = run_inprocess(capsys, monkeypatch, "quantize", art.path, "--output", tmp_path / "no", *common,
                        "--min-cosine-mean", "1")
    assert res.returncode not in (0, None) and "Traceback" not in res.stderr
    assert "below --min-cosine-mean 1" in " ".join(res.stderr.split())
    assert not (tmp_path / "no").exists()


def test_stage_config_carries_the_cosine_limits_and_a_manifest_config_round_trips(env):
    from deploylm.optimize.stages import QuantizeConfig

    cfg = QuantizeConfig(min_cosine=0.9, min_cosine_mean=0.97, data="sst2")
    gate = cfg.gate()
    assert (gate.min_cosine, gate.min_cosine_mean, gate.data) == (0.9, 0.97, "sst2")
    root, art, data = env
    out = quantize(art, root / "q-cfg", "dynamic-int8", gate=GateOptions(data=str(data), min_cosine=0.9, **FAST))
    again = QuantizeConfig(**out.manifest["config"]).gate()  # what `--config manifest-config.yaml` would run
    assert (again.min_cosine, again.min_cosine_mean, again.data) == (0.9, 0.98, str(data))
