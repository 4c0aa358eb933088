"""PyTorch eager runner for a transformers-format artifact (or any loaded model)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import settings
from .base import register_runner


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model) -> tuple[str, ...]:
    """The encoder inputs this model's forward() takes (MPNet/RoBERTa-style models take no token_type_ids)."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    return tuple(n for n in MODEL_INPUTS if n in accepted)


_COMPUTE: ThreadPoolExecutor | None = None
_COMPUTE_LOCK = threading.Lock()
_THREADS_SET: list[int] = [0]  # OpenMP team size last set on the compute thread


def _compute_thread() -> ThreadPoolExecutor:
    """The one OS thread that runs every torch forward of this process.

    Why: libgomp gives each thread that starts a parallel region its own team of workers, and once the
    process holds more OpenMP threads than CPUs it stops spinning between regions (its "throttled" spin
    count), so every op of a forward pays a futex wake-up. Running a model from two threads (say a
    warm-up in the loading thread, then requests in the server's batcher thread) was enough for that:
    batch-1 MiniLM fp32 ran several ms slower in the second thread. One compute thread keeps one team."""
    global _COMPUTE
    with _COMPUTE_LOCK:
        if _COMPUTE is None:
            _COMPUTE = ThreadPoolExecutor(1, thread_name_prefix="deploylm-torch")
        return _COMPUTE


def _forget_compute_thread() -> None:
    global _COMPUTE
    _COMPUTE, _THREADS_SET[0] = None, 0  # a forked child has the executor object but not its thread


os.register_at_fork(after_in_child=_forget_compute_thread)


class TorchRunner:
    backend = "torch"

    def __init__(self, model, threads: int | None = None, dtype: str | None = None):
        import torch

        self._torch = torch
        self.threads = threads or settings.num_threads()
        self.model = model.eval()
        self.dtype = dtype
        self.input_names = model_input_names(self.model)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if threading.current_thread().name.startswith("deploylm-torch"):
            return self._run(batch)
        return _compute_thread().submit(self._run, batch).result()

    def _run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        if _THREADS_SET[0] != self.threads:  # OpenMP's team size is a per-thread setting: set it here
            torch.set_num_threads(self.threads)
            _THREADS_SET[0] = self.threads
        feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items() if k in self.input_names}
        with torch.inference_mode():
            if self.dtype == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.model(**feeds)
            else:
                out = self.model(**feeds)
        return {"logits": out.logits.float().numpy()}


@register_runner("transformers")
def open_torch_runner(artifact, threads: int | None = None, **_ignored) -> TorchRunner:
    from ..tasks import get_task

    task = get_task(artifact.task)
    model = task.load_model(str(artifact.path))
    return TorchRunner(model, threads=threads, dtype=artifact.manifest.get("dtype"))
