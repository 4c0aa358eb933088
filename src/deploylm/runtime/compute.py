"""The one OS thread that runs every torch op of a process: encoder forwards, decoder loads and steps, sampling.

Why: libgomp gives each thread that starts a parallel region its own team of workers, and once the process
holds more OpenMP threads than CPUs it stops spinning between regions (its "throttled" spin count), so every op
pays a futex wake-up. A model loaded on one thread and stepped on another is enough for that. Measured with
`python benchmarks/decoder_thread_ab.py`: a weight-int8 SmolLM2 decode step on a second thread took several
times as long as on the thread that loaded it (figures in BENCHMARKS.md). One compute thread keeps one team.

Work already on the compute thread runs inline, so stages compose (a quantize stage that loads, quantises and
then gates through the decoder runner is one submission).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
THREAD_PREFIX = "deploylm-torch"

_COMPUTE: ThreadPoolExecutor | None = None
_COMPUTE_LOCK = threading.Lock()
_THREADS_SET: list[int] = [0]  # OpenMP team size last set on the compute thread


def compute_executor() -> ThreadPoolExecutor:
    global _COMPUTE
    with _COMPUTE_LOCK:
        if _COMPUTE is None:
            _COMPUTE = ThreadPoolExecutor(1, thread_name_prefix=THREAD_PREFIX)
        return _COMPUTE


def on_compute_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_PREFIX)


def run_on_compute(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) on the compute thread (inline when already there); its exception re-raised here."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    return compute_executor().submit(fn, *args, **kwargs).result()


def set_threads(n: int) -> None:
    """OpenMP's team size is a per-thread setting: set it on the compute thread, once per change."""
    if _THREADS_SET[0] != n:
        import torch

        torch.set_num_threads(n)
        _THREADS_SET[0] = n


def _forget_compute_thread() -> None:
    global _COMPUTE
    _COMPUTE, _THREADS_SET[0] = None, 0  # a forked child has the executor object but not its thread


os.register_at_fork(after_in_child=_forget_compute_thread)
