"""Whether this CPU can run deploylm's C++ int8 kernel (AVX-512 VNNI), read from /proc/cpuinfo, independently of
the code under test."""

from pathlib import Path


def cpu_has_vnni() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"avx512f", "avx512bw", "avx512_vnni"} <= set(flags)
