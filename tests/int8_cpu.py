"""Which of deploylm's C++ kernel loops this CPU should run, read from /proc/cpuinfo, independently of the code
under test (which reports what it was compiled for: int8_simd() / float_simd())."""

from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def cpu_has_vnni() -> bool:
    return {"avx512f", "avx512bw", "avx512_vnni"} <= cpu_flags()


def expected_int8_simd() -> str:
    """The int8 linear's loop: AVX-512 VNNI, else AVX2 (+ FMA), else '' (no fast loop: torch's kernels run)."""
    if cpu_has_vnni():
        return "avx512-vnni"
    return "avx2" if {"avx2", "fma"} <= cpu_flags() else ""


def expected_float_simd() -> str:
    flags = cpu_flags()
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else ""
