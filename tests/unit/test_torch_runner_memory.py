"""An fp32 forward keeps nothing per input shape: a server's batches take ever new (rows, tokens) shapes, and
a cache entry per shape was memory its soak run never got back (see TorchRunner._forward_without_onednn)."""

import ctypes
import os

import numpy as np
import pytest

from deploylm.artifacts import Artifact
from deploylm.runtime import open_runner
from deploylm.runtime.batching import pad_batch
from deploylm.runtime.compute import run_on_compute

GLIBC = bool(os.confstr("CS_GNU_LIBC_VERSION")) if "CS_GNU_LIBC_VERSION" in os.confstr_names else False


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use() -> int:
    """Bytes malloc has handed out and not had back, over every arena (glibc's mallinfo2)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _Mallinfo2
    return mallinfo2().uordblks


@pytest.mark.skipif(not GLIBC or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc's mallinfo2")
def test_fp32_forwards_at_new_shapes_keep_no_memory(tiny_cls):
    runner = open_runner(Artifact.open(tiny_cls.path), threads=1)

    def forward(rows: int, tokens: int) -> None:
        feats = [{"input_ids": [101] + [1000] * (tokens - 2) + [102], "attention_mask": [1] * tokens}] * rows
        runner.run(pad_batch(feats, 0, runner.input_names))

    for rows in range(1, 17):  # the size range once (even lengths): first calls' one-off allocations
        for tokens in range(4, 24, 2):
            forward(rows, tokens)
    before = run_on_compute(_heap_in_use)
    new_shapes = [(rows, tokens) for rows in range(1, 17) for tokens in range(5, 24, 2)]  # odd lengths: unseen
    for rows, tokens in new_shapes:
        forward(rows, tokens)
    grown = run_on_compute(_heap_in_use) - before
    assert grown < len(new_shapes) * 1024, f"{grown / len(new_shapes):.0f} bytes kept per new input shape"
