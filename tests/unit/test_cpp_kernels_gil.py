"""deploylm's C++ kernels run without the GIL: while one runs on one thread, Python code runs on another. A kernel
that held it would keep the server's event loop (which streams the tokens) waiting for the whole call."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from deploylm.runtime import cpp_kernels


@pytest.fixture(scope="module")
def module():
    built = cpp_kernels.module()
    assert built is not None, f"the C++ kernels did not build (`make install` builds them): {cpp_kernels.build_error()}"
    return built


class Spinner:
    """A Python loop on a second thread that counts its rounds while `counting` is set."""

    def __init__(self):
        self.counting, self.stop, self.rounds = threading.Event(), threading.Event(), 0
        self.thread = threading.Thread(target=self._spin)

    def _spin(self) -> None:
        while not self.stop.is_set():
            if self.counting.is_set():
                self.rounds += 1

    def during(self, call) -> tuple[int, float]:
        self.rounds = 0
        self.counting.set()
        t0 = time.perf_counter()
        call()
        seconds = time.perf_counter() - t0
        self.counting.clear()
        return self.rounds, seconds


def test_a_long_kernel_call_lets_python_run_on_another_thread(module):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below: later tests in this process compare runs across processes
    x, w = torch.randn(40000, 2048), torch.ones(2048)
    spinner = Spinner()
    spinner.thread.start()
    try:
        # The spinner's pace when nothing competes for the GIL (this thread sleeps, which releases it).
        idle_rounds, idle_s = spinner.during(lambda: time.sleep(0.1))
        rounds, call_s = spinner.during(lambda: module.rms_norm(x, w, 1e-5))
    finally:
        spinner.stop.set()
        spinner.thread.join()
        torch.set_num_threads(threads)
    rate = idle_rounds / idle_s
    # Holding the GIL, the call would let the spinner run at most one switch interval (5 ms) around it; released,
    # the spinner runs for the whole call. Require a third of the rounds the call's length allows.
    assert call_s > 0.03, f"the call took {call_s * 1e3:.0f} ms: too short to tell; make x larger"
    assert rounds > rate * call_s / 3, (rounds, rate, call_s)
