"""Every torch forward of the process runs on one compute thread, whichever thread calls run()
(why: runtime/compute.py)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deploylm.runtime.torch_runner import TorchRunner


class Recording:
    """A stand-in model that records the thread it is called on."""

    def __init__(self):
        self.threads = []

    def eval(self):
        return self

    def forward(self, input_ids=None, attention_mask=None):
        pass

    def __call__(self, **feeds):
        import torch

        self.threads.append(threading.current_thread().name)
        out = type("Out", (), {})()
        out.logits = torch.zeros(feeds["input_ids"].shape[0], 2)
        return out


def test_calls_from_any_thread_run_on_the_one_compute_thread():
    model = Recording()
    runner = TorchRunner(model, threads=1)
    batch = {"input_ids": np.ones((3, 4), np.int64), "attention_mask": np.ones((3, 4), np.int64)}
    assert runner.run(batch)["logits"].shape == (3, 2)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: runner.run(batch), range(4)))
    assert len(model.threads) == 5 and len(set(model.threads)) == 1
    assert model.threads[0].startswith("deploylm-torch")


def test_a_forked_child_gets_its_own_compute_thread():
    import multiprocessing

    _FORKED["runner"] = TorchRunner(Recording(), threads=1)
    _FORKED["runner"].run(_FORKED["batch"])  # the parent's compute thread exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # would hang on the parent's (absent) thread without the at-fork reset
        shape = pool.apply_async(_run_in_child).get(timeout=60)
    assert shape == (1, 2)


_FORKED = {"batch": {"input_ids": np.ones((1, 2), np.int64), "attention_mask": np.ones((1, 2), np.int64)}}


def _run_in_child():  # the runner reaches the child through fork's copy of this module, not pickling
    return tuple(_FORKED["runner"].run(_FORKED["batch"])["logits"].shape)
