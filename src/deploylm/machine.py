"""What machine and library versions a measurement came from (recorded in every manifest)."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_vnni() -> bool:
    """AVX-512 VNNI: u8 x s8 products summed in int32. Without it, x86 int8 kernels (onnxruntime's MLAS, fbgemm) add
    pairs of products in int16, which saturates on full-range int8 weights."""
    return {"avx512f", "avx512bw", "avx512_vnni"} <= cpu_flags()


def simd() -> str:
    """The widest x86 vector extension this CPU has that deploylm's kernels use."""
    flags = cpu_flags()
    if has_vnni():
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "none"


@functools.lru_cache(maxsize=1)
def machine_info() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 0
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "simd": simd(),
        "cores": cores,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
    }


def library_versions() -> dict:
    out = {}
    for pkg in ("deploylm", "torch", "transformers", "onnxruntime", "onnx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
