"""Hand a long-running server's freed heap memory back to the kernel between batches.

Every batch has a (rows, tokens) shape of its own, so torch allocates and frees activation buffers of
ever-changing sizes. glibc keeps them in its malloc arenas (its mmap threshold rises past them once the first
large ones are freed), and once freed they leave holes that the next, differently sized buffer does not fit:
the arenas' free space grows while the memory in use stays flat. That was the RSS growth benchmarks/soak.py
measured. malloc_trim gives the whole free pages of every arena back.

Pinning the mmap threshold instead (MALLOC_MMAP_THRESHOLD_) also keeps RSS flat, but then every large buffer
is a fresh mapping whose pages fault in again on every forward: measured on the soak's model, several times
the system time of a trim every few batches, which only refaults the pages it gave back.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable

TRIM_EVERY_BATCHES = 16  # few enough that a soak's RSS stays flat, many enough that trims cost little


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        trim = ctypes.CDLL(None).malloc_trim
    except (ValueError, OSError, AttributeError):  # no such confstr name, or no such symbol
        return None
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return trim


class HeapTrimmer:
    """Called by a batcher thread after each batch; trims every `every` batches."""

    def __init__(self, every: int = TRIM_EVERY_BATCHES, trim: Callable[[int], int] | None = None):
        self.every = every
        self._trim = trim if trim is not None else malloc_trim()
        self._since = 0
        self.trims = 0

    def after_batch(self) -> None:
        if self._trim is None:
            return
        self._since += 1
        if self._since >= self.every:
            self._since = 0
            self._trim(0)  # keep no slack at the top of the heap either: the next batch's sizes are unknown
            self.trims += 1
