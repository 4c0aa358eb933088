"""Environment variables are read in one place (deploylm.settings); bad values get a clear error."""

import os

import pytest

from deploylm import settings
from deploylm.errors import ConfigError


@pytest.mark.parametrize("value, policy", [(None, "always"), ("1", "always"), ("0", "never"), ("never", "never"),
                                           ("during-run", "during-run"), ("DURING-RUN", "during-run")])
def test_spin_wait_policies(monkeypatch, value, policy):
    if value is None:
        monkeypatch.delenv("DEPLOYLM_SPIN_WAIT", raising=False)
    else:
        monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", value)
    assert settings.spin_wait() == policy


def test_spin_wait_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "sometimes")
    with pytest.raises(ConfigError, match="during-run"):
        settings.spin_wait()


def test_serving_threads_spin_only_during_a_call_unless_told(monkeypatch):
    monkeypatch.delenv("DEPLOYLM_SPIN_WAIT", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test: "never" sets it
    settings.use_serving_threads()
    assert settings.spin_wait() == "during-run"
    assert int(os.environ["GOMP_SPINCOUNT"]) > 0
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "never")  # an explicit choice wins
    settings.use_serving_threads()
    assert settings.spin_wait() == "never"


def test_ort_session_options_follow_the_policy(monkeypatch):
    from deploylm.runtime.ort_runner import session_options

    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "during-run")
    so = session_options(threads=1)
    assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "never")
    assert session_options(threads=1).get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("value, names", [(None, settings.DEFAULT_ORT_DISABLED_OPTIMIZERS), ("none", ()), ("", ()),
                                          ("GeluFusion", ("GeluFusion",)),
                                          ("SkipLayerNormFusion; GeluFusion,", ("SkipLayerNormFusion", "GeluFusion"))])
def test_ort_disabled_optimizers(monkeypatch, value, names):
    if value is None:
        monkeypatch.delenv("DEPLOYLM_ORT_DISABLED_OPTIMIZERS", raising=False)
    else:
        monkeypatch.setenv("DEPLOYLM_ORT_DISABLED_OPTIMIZERS", value)
    assert settings.ort_disabled_optimizers() == tuple(names)


def test_disabled_fusions_reach_the_onnxruntime_session(monkeypatch, tmp_path):
    """The session really leaves the named fusion out: a MatMul whose output is scaled stays MatMul +
    Mul instead of becoming FusedMatMul."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from deploylm.runtime.ort_runner import session_options

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    inits = [numpy_helper.from_array(np.eye(8, dtype=np.float32), "w"),
             numpy_helper.from_array(np.array(0.5, np.float32), "s")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Mul", ["m", "s"], ["y"])],
                              "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def optimised_ops(tmp_name, value):
        monkeypatch.setenv("DEPLOYLM_ORT_DISABLED_OPTIMIZERS", value)
        so = session_options(1)
        so.optimized_model_filepath = str(tmp_name)
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(str(tmp_name)).graph.node]

    assert optimised_ops(tmp_path / "a.onnx", "none") == ["FusedMatMul"]
    assert optimised_ops(tmp_path / "b.onnx", "MatMulScaleFusion") == ["MatMul", "Mul"]
