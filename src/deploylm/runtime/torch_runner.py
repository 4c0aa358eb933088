"""PyTorch eager runner for a transformers-format artifact (or any loaded model)."""

from __future__ import annotations

import numpy as np

from .. import settings
from .base import register_runner
from .compute import run_on_compute, set_threads


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model) -> tuple[str, ...]:
    """The encoder inputs this model's forward() takes (MPNet/RoBERTa-style models take no token_type_ids)."""
    import inspect

    # A task's wrapper module (tasks/feature_extraction.py) takes what the encoder it wraps takes.
    inner = getattr(model, "wrapped_model", model)
    accepted = set(inspect.signature(inner.forward).parameters)
    return tuple(n for n in MODEL_INPUTS if n in accepted)


class TorchRunner:
    backend = "torch"

    def __init__(self, model, threads: int | None = None, dtype: str | None = None, task=None):
        """task: the Task whose output_names run() returns; None (a bare model) reads the default, logits."""
        import torch

        from ..tasks.base import Task

        self._torch = torch
        self.task = task if task is not None else Task()
        self.output_names = self.task.output_names
        self.threads = threads or settings.num_threads()
        self.model = model.eval()
        self.dtype = dtype
        self.input_names = model_input_names(self.model)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_on_compute(self._run, batch)  # one OpenMP team per process: see runtime/compute.py

    def _run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        set_threads(self.threads)
        feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items() if k in self.input_names}
        with torch.inference_mode():
            if self.dtype == "bf16":  # its matmuls need oneDNN
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.model(**feeds)
            else:
                out = self._forward_without_onednn(feeds)
        return self.task.model_outputs(out)

    def _forward_without_onednn(self, feeds: dict):
        """In an fp32 encoder only GELU goes to oneDNN, which builds and caches a primitive per input shape:
        a server whose batches take ever new shapes kept that memory and paid the build on most calls.
        ATen's own GELU keeps nothing per shape. The switch is process-wide, but every torch op runs on this
        one compute thread (runtime/compute.py), so no other op runs while it is off."""
        torch = self._torch
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return self.model(**feeds)
        finally:
            torch.backends.mkldnn.enabled = enabled


@register_runner("transformers")
def open_torch_runner(artifact, threads: int | None = None, **_ignored) -> TorchRunner:
    from ..tasks import task_for

    task = task_for(artifact)
    model = run_on_compute(task.load_model, str(artifact.path))  # where its forwards will run
    return TorchRunner(model, threads=threads, dtype=artifact.manifest.get("dtype"), task=task)
