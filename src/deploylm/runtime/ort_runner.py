"""onnxruntime runner for an ONNX artifact (model.onnx + tokenizer + config.json in one directory).

Session options are set on purpose, never left to defaults by accident:
- intra-op threads = settings.num_threads() (every core we may use), inter-op threads = 1 and
  sequential execution: an encoder graph is a chain, parallel branches buy nothing and an extra
  inter-op pool only competes for the same 2 cores;
- full graph optimisation (ORT_ENABLE_ALL): the offline fusions (fuse.py) are portable ONNX,
  the CPU-specific layout transforms are best done by the session on the machine that runs it;
- less the fusions measured to slow this CPU down (settings.ort_disabled_optimizers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import settings
from ..errors import BackendUnavailableError, ConfigError
from .base import register_runner

MODEL_FILE = "model.onnx"
GRAPH_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, graph_level: str = "all",
                    disabled_optimizers: tuple[str, ...] | None = None):
    """disabled_optimizers: onnxruntime graph transformers to leave out; None = settings' choice."""
    import onnxruntime as ort

    if graph_level not in GRAPH_LEVELS:
        raise ConfigError(f"Unknown graph optimisation level '{graph_level}'. Use one of {GRAPH_LEVELS}.")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or settings.num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_level]
    disabled = settings.ort_disabled_optimizers() if disabled_optimizers is None else disabled_optimizers
    if disabled and graph_level != "disable":
        so.add_session_config_entry("optimization.disable_specified_optimizers", ";".join(disabled))
    spin = settings.spin_wait()
    if spin == "never":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spin == "during-run":  # spin between a call's ops, stop the moment session.run returns
        so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
    return so


class OrtRunner:
    backend = "onnxruntime"

    def __init__(self, model_path: str | Path, threads: int | None = None, graph_level: str = "all",
                 disabled_optimizers: tuple[str, ...] | None = None, int8_weights_as_uint8: bool = False):
        """int8_weights_as_uint8: run int8 weights as uint8 (+128), see open_ort_runner."""
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise BackendUnavailableError(f"ONNX model {path} does not exist; the artifact is incomplete. Re-export it.")
        self.path = path
        self.threads = threads or settings.num_threads()
        self.int8_weights_shifted = 0
        source = str(path)
        if int8_weights_as_uint8:
            source, self.int8_weights_shifted = _with_uint8_weights(path)
        self.session = ort.InferenceSession(source, session_options(self.threads, graph_level, disabled_optimizers),
                                            providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        # Every graph output, by the name the export gave it (the task's output_names): a task with several
        # outputs (QA's start/end logits) gets them all, and no output is ever picked by position.
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = batch["input_ids"].shape
        feeds = {}
        for name in self.input_names:
            arr = batch.get(name)
            if arr is None:  # e.g. token_type_ids the tokenizer did not produce: all segment 0
                arr = np.zeros(shape, dtype=np.int64)
            feeds[name] = np.ascontiguousarray(arr, dtype=np.int64)
        values = self.session.run(list(self.output_names), feeds)
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, values)}


def _with_uint8_weights(path: Path) -> tuple[str | bytes, int]:
    """The graph at `path` with its int8 weights stored as uint8 (optimize/onnx_uint8_weights.py), as bytes for the
    session; the path itself when it has none."""
    from ..optimize.onnx_uint8_weights import load_with_uint8_weights

    model, shifted = load_with_uint8_weights(path)
    return (model.SerializeToString(), shifted) if shifted else (str(path), 0)


def needs_uint8_weights(artifact) -> bool:
    """An int8 variant quantised on a CPU with VNNI (int8 weights), opened on one without: onnxruntime's u8 x s8
    kernel would saturate there and silently change the outputs, so its weights run as uint8, the same integers
    (the rewrite a quantisation on this CPU writes to the file)."""
    from ..machine import has_vnni

    stored = artifact.manifest.get("optimization", {}).get("weight_type", "int8")
    return artifact.manifest.get("method") in ("dynamic-int8", "static-int8") and stored == "int8" and not has_vnni()


@register_runner("onnx")
def open_ort_runner(artifact, threads: int | None = None, graph_level: str = "all", **_ignored) -> OrtRunner:
    return OrtRunner(artifact.path / artifact.manifest.get("model_file", MODEL_FILE), threads=threads,
                     graph_level=graph_level, int8_weights_as_uint8=needs_uint8_weights(artifact))
