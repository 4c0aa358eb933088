"""Quantisation of a tiny random BERT: each method passes parity on fresh random and real inputs,
writes a loadable artifact with gate figures; bad input fails with a clear error and writes nothing."""

from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_artifact
from deploylm.errors import ConfigError, DataError
from deploylm.optimize.gate import GateOptions
from deploylm.optimize.quantize import quantize


def write_sst2(d: Path, n_train: int = 64, n_dev: int = 32) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    pos = ["a great and moving film", "wonderful acting , lovely story", "funny and warm"]
    neg = ["a dull , tedious mess", "boring and far too long", "the plot makes no sense"]
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"] + [f"{(pos if i % 2 else neg)[i % 3]} {i}\t{i % 2}" for i in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    art = build_tiny_artifact(root / "cls", labels=["0", "1"], seed=3)
    return root, art, write_sst2(root / "data")


# The speed side of the gate is measured, never asserted here (tiny models on a shared CPU).
LENIENT = dict(allow_slower=True)


@pytest.mark.parametrize("method", ["dynamic-int8", "static-int8", "bf16"])
def test_each_method_passes_parity_and_records_the_gate(env, method):
    from deploylm.artifacts import Artifact
    from deploylm.runtime import open_runner

    root, art, data = env
    out = quantize(art, root / f"q-{method}", method, gate=GateOptions(data=str(data), **LENIENT),
                   calibration_samples=32)
    reopened = Artifact.open(out.path)  # checksums verified
    m = reopened.manifest
    assert m["stage"] == "quantize" and m["method"] == method and m["parent"]["hash"] == art.hash
    assert m["format"] == ("transformers" if method == "bf16" else "onnx")
    parity = m["parity"]
    assert parity["passed"] and parity["random"]["positions"] == 24 and parity["real"]["positions"] >= 8
    assert parity["random"]["max_abs_diff"] > 0  # really transformed (not a copy of the parent)
    assert parity["random"]["max_abs_diff"] <= parity["tolerance"]["max_abs"]
    gate = m["gate"]
    assert gate["samples"] == 32 and gate["metric"] == "accuracy"
    assert gate["speed"]["parent_seq_per_s"] > 0 and gate["speed"]["variant_seq_per_s"] > 0
    runner = open_runner(reopened)
    assert runner.backend == ("torch" if method == "bf16" else "onnxruntime")
    ids = np.random.default_rng(0).integers(1000, 30000, size=(2, 9))
    logits = runner.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})["logits"]
    assert logits.shape == (2, 2) and logits.dtype == np.float32


def test_dynamic_int8_is_per_channel_on_the_unfused_export(env):
    import onnx

    root, art, data = env
    out = quantize(art, root / "q-dyn-check", "dynamic-int8", gate=GateOptions(data=str(data), **LENIENT))
    ops = {n.op_type for n in onnx.load(str(out.path / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops and "QAttention" not in ops  # the session, not the file, fuses
    assert out.manifest["optimization"]["per_channel"] is True
    assert out.manifest["optimization"]["export"]["optimize"] is None
    assert out.manifest["optimization"]["rewrites"] == ["first-token-last-layer"]
    assert out.manifest["config"]["all_tokens_last_layer"] is False


def test_dynamic_int8_of_a_fused_onnx_parent_quantises_attention(env):
    import onnx

    from deploylm.optimize.export_onnx import export

    root, art, data = env
    fused = export(art, root / "o2-parent", optimize="O2", gate=GateOptions(data=str(data), **LENIENT))
    out = quantize(fused, root / "q-of-o2", "dynamic-int8", gate=GateOptions(data=str(data), **LENIENT))
    ops = {n.op_type for n in onnx.load(str(out.path / "model.onnx")).graph.node}
    assert "QAttention" in ops and "MatMulInteger" in ops
    assert out.manifest["parent"]["path"] == str(fused.path.resolve())
    # the parent's graph is kept as it is, rewrite included; asking for the full last layer there is refused
    assert out.manifest["optimization"]["rewrites"] == ["first-token-last-layer"]
    with pytest.raises(ConfigError, match="--all-tokens-last-layer"):
        quantize(fused, root / "q-of-o2-all", "dynamic-int8", all_tokens_last_layer=True,
                 gate=GateOptions(data=str(data), **LENIENT))
    assert not (root / "q-of-o2-all").exists()


def test_static_int8_quantises_activations(env):
    import onnx

    root, art, data = env
    out = quantize(art, root / "q-static-check", "static-int8", gate=GateOptions(data=str(data), **LENIENT),
                   calibration_samples=16)
    ops = [n.op_type for n in onnx.load(str(out.path / "model.onnx")).graph.node]
    assert ops.count("QuantizeLinear") >= 6  # activations, not weights only
    assert out.manifest["optimization"]["calibration_samples"] == 16


def test_unknown_method_lists_valid_ones(env):
    root, art, data = env
    with pytest.raises(ConfigError, match="dynamic-int8, static-int8, bf16"):
        quantize(art, root / "never", "int4", gate=GateOptions(data=str(data)))
    assert not (root / "never").exists()


def test_method_backend_mismatch_is_explained(env):
    root, art, data = env
    with pytest.raises(ConfigError, match="bfloat16 MatMul"):
        quantize(art, root / "never", "bf16", backend="onnxruntime", gate=GateOptions(data=str(data)))


def test_calibration_data_missing_or_empty(env, tmp_path):
    root, art, _ = env
    with pytest.raises(DataError):
        quantize(art, tmp_path / "out", "static-int8", gate=GateOptions(data=str(tmp_path / "nope")))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.tsv").write_text("sentence\tlabel\n")
    (empty / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match="train"):
        quantize(art, tmp_path / "out", "static-int8", gate=GateOptions(data=str(empty)))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no staging left


def test_no_data_anywhere_asks_for_data(env, tmp_path):
    _, art, _ = env  # tiny artifact records no dataset in its lineage
    with pytest.raises(ConfigError, match="--data"):
        quantize(art, tmp_path / "out", "dynamic-int8")


def test_unsupported_task_names_supported(tmp_path):
    from deploylm.artifacts import create_artifact

    fake = create_artifact(tmp_path / "qa", lambda d: (d / "config.json").write_text('{"model_type": "bert"}'),
                           stage="finetune", config={}, parent=None, task="question-answering", labels=[], max_length=64)
    with pytest.raises(ConfigError, match="classification, token-classification"):
        quantize(fake, tmp_path / "out", "dynamic-int8")


def test_unsupported_architecture_names_supported(tmp_path):
    from deploylm.artifacts import create_artifact

    fake = create_artifact(tmp_path / "gpt", lambda d: (d / "config.json").write_text('{"model_type": "gpt2"}'),
                           stage="finetune", config={}, parent=None, task="classification", labels=["a", "b"],
                           max_length=64)
    with pytest.raises(ConfigError, match="'gpt2'.*bert"):
        quantize(fake, tmp_path / "out", "dynamic-int8")
