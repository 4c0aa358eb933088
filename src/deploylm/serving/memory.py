"""Keep a long-running server's heap from growing with the shapes of its batches.

Every batch has a (rows, tokens) shape of its own, so torch allocates and frees activation buffers of
ever-changing sizes. glibc raises its mmap threshold each time a large mmapped block is freed; from then on
such buffers are cut out of the malloc arenas instead, and once freed they leave holes that the next,
differently sized buffer does not fit. The arenas keep growing while the memory in use stays flat: the RSS
growth benchmarks/soak.py measured. Pinning glibc's thresholds at their defaults turns that adjustment off,
so large buffers are mmapped and handed back to the kernel when freed.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # DEFAULT_MMAP_THRESHOLD_MIN and DEFAULT_TRIM_THRESHOLD in glibc
OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OPERATOR_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def _operator_chose() -> bool:
    """Thresholds set through the environment are the operator's: they win over ours."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(v in os.environ for v in OPERATOR_SETTINGS) or any(t in tunables for t in OPERATOR_TUNABLES)


def pin_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True when they were set here.

    A no-op off glibc (other allocators have no dynamic threshold to pin) and where the environment already
    sets them. Call it before the models load, so that no threshold has moved yet."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # no such confstr name, no libc symbols to look up
        return False
    if _operator_chose():
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD))
