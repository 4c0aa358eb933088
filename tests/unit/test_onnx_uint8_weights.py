"""Int8 ONNX weights stored as uint8 (optimize/onnx_uint8_weights.py): onnxruntime computes the same integers from
the rewritten graph, checked against numpy's exact int64 products; graphs where a shift would change the result
are refused."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploylm.errors import ModelError
from deploylm.optimize.onnx_uint8_weights import store_weights_as_uint8


def matmul_integer_model(weights: np.ndarray, zero_points: np.ndarray | None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(weights, "w")]
    inputs = ["a", "w", "a_zp"]
    if zero_points is not None:
        inits.append(numpy_helper.from_array(zero_points, "w_zp"))
        inputs.append("w_zp")
    inits.append(numpy_helper.from_array(np.array(3, np.uint8), "a_zp"))
    node = helper.make_node("MatMulInteger", inputs, ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, weights.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [None, weights.shape[1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_full_range_weights_give_the_exact_integer_products():
    rng = np.random.default_rng(0)
    # full-range weights and activations: the u8 x s8 pairs that saturate int16 (255 * 127 * 2 > 32767) are here
    w = rng.integers(-127, 128, size=(64, 16)).astype(np.int8)
    w[:, 0] = 127
    zp = np.zeros(16, np.int8)
    a = rng.integers(0, 256, size=(5, 64)).astype(np.uint8)
    a[0] = 255
    model = matmul_integer_model(w, zp)
    assert store_weights_as_uint8(model) == 2
    by_name = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert by_name["w"].dtype == np.uint8 and (by_name["w_zp"] == 128).all()
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    expected = (a.astype(np.int64) - 3) @ w.astype(np.int64)
    np.testing.assert_array_equal(got, expected)


def test_a_weight_without_a_zero_point_is_refused():
    model = matmul_integer_model(np.ones((4, 2), np.int8), None)
    with pytest.raises(ModelError, match="without an int8 zero point"):
        store_weights_as_uint8(model)


def test_an_int8_tensor_in_an_unknown_slot_is_refused():
    model = matmul_integer_model(np.ones((4, 2), np.int8), np.zeros(2, np.int8))
    model.graph.node.append(helper.make_node("Cast", ["w"], ["w_f"], to=TensorProto.FLOAT, name="cast"))
    with pytest.raises(ModelError, match="feeds input 0 of Cast 'cast'"):
        store_weights_as_uint8(model)
    assert all(t.data_type == TensorProto.INT8 for t in model.graph.initializer if t.name.startswith("w"))


def vnni_built_int8_artifact(tmp_path):
    """A dynamic-int8 artifact as a CPU with VNNI writes it (int8 weights in the file, manifest weight_type int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from conftest import build_tiny_artifact
    from deploylm.artifacts import Artifact, create_artifact
    from deploylm.optimize.common import check_supported
    from deploylm.optimize.export_onnx import build_onnx_files

    parent = Artifact.open(build_tiny_artifact(tmp_path / "cls", labels=["0", "1"], seed=3).path)
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    build_onnx_files(parent, fp32, None, check_supported(parent))

    def write(d):
        build_onnx_files(parent, d, None, check_supported(parent))
        quantize_dynamic(str(fp32 / "model.onnx"), str(d / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})

    art = create_artifact(tmp_path / "q", write, stage="quantize", config={}, parent=None, task="classification",
                          labels=["0", "1"], max_length=64, fmt="onnx",
                          extra={"method": "dynamic-int8", "optimization": {"weight_type": "int8"}})
    return Artifact.open(art.path)


def test_an_int8_artifact_from_a_vnni_cpu_runs_its_weights_as_uint8_without_vnni(tmp_path, monkeypatch):
    from deploylm import machine
    from deploylm.artifacts import Artifact
    from deploylm.runtime import open_runner
    from deploylm.runtime.ort_runner import OrtRunner

    art = vnni_built_int8_artifact(tmp_path)
    stored = onnx.load(str(art.path / "model.onnx"))
    assert any(t.data_type == TensorProto.INT8 for t in stored.graph.initializer)
    store_weights_as_uint8(stored)
    onnx.save(stored, str(tmp_path / "shifted.onnx"))  # the rewrite done by hand: what the runner must run

    rng = np.random.default_rng(1)
    ids = rng.integers(1000, 30000, size=(4, 20))
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    expected = OrtRunner(tmp_path / "shifted.onnx", threads=1).run(batch)["logits"]

    monkeypatch.setattr(machine, "has_vnni", lambda: False)
    runner = open_runner(art, threads=1)
    assert runner.int8_weights_shifted > 0
    np.testing.assert_allclose(runner.run(batch)["logits"], expected, atol=1e-5)
    Artifact.open(art.path)  # the file was read, not rewritten: its checksums still verify

    monkeypatch.setattr(machine, "has_vnni", lambda: True)
    assert open_runner(art, threads=1).int8_weights_shifted == 0  # with VNNI the int8 graph runs as it is
