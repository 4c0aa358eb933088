"""Runners return every output their task declares, by name; parity compares each of them; the ONNX export
names its graph outputs after the task's."""

import numpy as np
import pytest

from conftest import build_tiny_artifact
from deploylm.errors import ParityError
from deploylm.optimize.verify import compare

W_LOGITS = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=np.float32)
W_SPAN = np.array([[2.0, 0.0, 1.0, -1.0], [0.0, 1.5, -0.5, 2.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)


def two_output_graph(path):
    """input_ids [batch, 3] int64 -> float -> two MatMuls: 'logits' [batch, 2] and 'span_logits' [batch, 4]."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w_logits"], ["logits"]),
             helper.make_node("MatMul", ["x", "w_span"], ["span_logits"])]
    graph = helper.make_graph(
        nodes, "two_outputs",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("span_logits", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(W_LOGITS, "w_logits"), numpy_helper.from_array(W_SPAN, "w_span")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def test_ort_runner_returns_every_graph_output_by_name(tmp_path):
    from deploylm.runtime.ort_runner import OrtRunner

    two_output_graph(tmp_path / "m.onnx")
    runner = OrtRunner(tmp_path / "m.onnx", threads=1)
    assert runner.output_names == ("logits", "span_logits")
    ids = np.array([[1, 2, 3], [4, 0, -2]], dtype=np.int64)
    out = runner.run({"input_ids": ids})
    assert set(out) == {"logits", "span_logits"}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["logits"], ids.astype(np.float32) @ W_LOGITS, rtol=1e-6)
    np.testing.assert_allclose(out["span_logits"], ids.astype(np.float32) @ W_SPAN, rtol=1e-6)


class Fixed:
    """A stand-in runner returning fixed outputs for a two-row batch."""

    backend = "fake"
    input_names = ("input_ids", "attention_mask")

    def __init__(self, outputs):
        self.outputs = outputs
        self.output_names = tuple(outputs)

    def run(self, batch):
        assert batch["input_ids"].shape[0] == 2
        return {k: np.asarray(v, dtype=np.float32) for k, v in self.outputs.items()}


BATCH = [{"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64)}]
LOGITS = [[2.0, -1.0], [0.0, 4.0]]


def test_compare_looks_at_every_output_not_only_logits():
    parent = Fixed({"logits": LOGITS, "span_logits": [[1.0, 1.5], [3.0, 0.0]]})
    # Same logits; span_logits' first column 0.7 higher: row 0's argmax flips (1.7 > 1.5), row 1's does not.
    variant = Fixed({"logits": LOGITS, "span_logits": [[1.7, 1.5], [3.7, 0.0]]})
    res = compare(parent, variant, BATCH)
    assert res["max_abs_diff"] >= 0.7 - 1e-6
    assert res["outputs"]["logits"]["max_abs_diff"] == 0.0
    assert res["outputs"]["logits"]["argmax_agreement"] == 1.0
    assert res["outputs"]["span_logits"]["max_abs_diff"] == pytest.approx(0.7, abs=1e-6)
    assert res["outputs"]["span_logits"]["argmax_agreement"] == 0.5
    assert res["argmax_agreement"] == 0.5  # the worst output's
    assert res["positions"] == 4 and res["decided_positions"] == 4 and res["margin"] == 0.0


def test_compare_single_output_report_keeps_its_keys():
    res = compare(Fixed({"logits": LOGITS}), Fixed({"logits": [[2.0, -1.0], [5.0, 4.0]]}), BATCH)
    assert res["max_abs_diff"] == 5.0 and res["argmax_agreement"] == 0.5
    assert res["positions"] == 2 and res["decided_positions"] == 2
    assert set(res["outputs"]) == {"logits"}


def test_a_variant_missing_an_output_fails_parity_naming_it():
    parent = Fixed({"logits": LOGITS, "span_logits": [[1.0, 1.5], [3.0, 0.0]]})
    with pytest.raises(ParityError, match="span_logits"):
        compare(parent, Fixed({"logits": LOGITS}), BATCH)


def test_torch_runner_on_a_classification_artifact_returns_logits(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from deploylm.artifacts import Artifact
    from deploylm.runtime import open_runner

    art = build_tiny_artifact(tmp_path / "cls", "classification")
    runner = open_runner(Artifact.open(art.path), threads=1)
    assert runner.output_names == ("logits",)
    tok = AutoTokenizer.from_pretrained(art.path)
    enc = tok(["a fine film", "dull"], padding=True, return_tensors="np")
    out = runner.run({k: v.astype(np.int64) for k, v in enc.items()})
    assert set(out) == {"logits"} and out["logits"].dtype == np.float32 and out["logits"].shape == (2, 2)
    model = AutoModelForSequenceClassification.from_pretrained(art.path).eval()  # plain transformers reference
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(out["logits"], ref, atol=1e-5)


def test_torch_runner_returns_every_output_its_task_declares():
    import torch

    from deploylm.runtime.torch_runner import TorchRunner
    from deploylm.tasks.base import Task

    class Span(Task):
        output_names = ("start_logits", "end_logits")

    class Model:  # a stand-in forward with QA-shaped outputs
        def eval(self):
            return self

        def forward(self, input_ids=None, attention_mask=None):
            pass

        def __call__(self, input_ids, attention_mask):
            out = type("Out", (), {})()
            out.start_logits = input_ids.float() * 2
            out.end_logits = -input_ids.to(torch.bfloat16)  # a bf16 output comes back float32
            out.logits = torch.zeros(1)  # not declared: not returned
            return out

    ids = np.array([[1, 2, 3]], dtype=np.int64)
    out = TorchRunner(Model(), threads=1, task=Span()).run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert set(out) == {"start_logits", "end_logits"}
    np.testing.assert_array_equal(out["start_logits"], [[2.0, 4.0, 6.0]])
    np.testing.assert_array_equal(out["end_logits"], [[-1.0, -2.0, -3.0]])
    assert out["end_logits"].dtype == np.float32


def test_export_names_outputs_after_the_task_with_axes_per_output(tmp_path):
    from deploylm.artifacts import Artifact
    from deploylm.optimize.export_onnx import export_to_file, output_axes
    from deploylm.runtime.ort_runner import OrtRunner
    from deploylm.tasks import get_task

    assert output_axes(get_task("classification")) == {"logits": {0: "batch"}}
    assert output_axes(get_task("token-classification")) == {"logits": {0: "batch", 1: "sequence"}}
    art = Artifact.open(build_tiny_artifact(tmp_path / "ner", "token-classification").path)
    export_to_file(art, tmp_path / "m.onnx")
    runner = OrtRunner(tmp_path / "m.onnx", threads=1)
    assert runner.output_names == ("logits",)
    for shape in ((1, 5), (3, 9)):  # batch and sequence both dynamic
        ids = np.full(shape, 1000, dtype=np.int64)
        out = runner.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert out["logits"].shape == (*shape, 5)
