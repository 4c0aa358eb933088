"""The C++ decode-attention kernel over KV slabs (csrc/slab_decode.cpp), built once per machine with torch's own
extension builder (`torch.utils.cpp_extension.load`: g++ and ninja; `make install` builds it ahead).

Optional by design: where it cannot build (no compiler) or is switched off ($DEPLOYLM_DECODE_KERNEL=0), decode
attention runs torch's SDPA per sequence, as before, with the same results up to float rounding.

Built with -fopenmp: its at::parallel_for then runs on the libgomp torch itself loaded (same soname, so the
loader reuses it), on the compute thread's one team (runtime/compute.py). -march=native: the build directory is
keyed by this CPU's instruction-set flags, so a cache moved to another CPU builds anew instead of crashing.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .. import settings

SOURCE = Path(__file__).with_name("csrc") / "slab_decode.cpp"
_LOCK = threading.Lock()
_STATE: dict = {}


def _cpu_tag() -> str:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                     "")
    except OSError:
        flags = ""
    digest = hashlib.sha256((flags + SOURCE.read_bytes().hex()).encode()).hexdigest()
    return digest[:10]


def kernel():
    """The compiled module (with `slab_decode_attention`), or None: switched off, or it could not be built (the
    reason in `build_error()`). Built on first use, then loaded from the cache."""
    with _LOCK:
        if "module" not in _STATE:
            _STATE["module"], _STATE["error"] = _build() if settings.decode_kernel() else (None, "switched off")
        return _STATE["module"]


def build_error() -> str | None:
    return _STATE.get("error")


def _build():
    try:
        from torch.utils.cpp_extension import load

        module = load(name=f"deploylm_slab_decode_{_cpu_tag()}", sources=[str(SOURCE)],
                      extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        return module, None
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the SDPA path
        return None, f"{type(exc).__name__}: {str(exc)[:500]}"


if __name__ == "__main__":  # `make install`: build it now, say whether it works
    import sys

    module = kernel()
    print("deploylm decode-attention kernel:", "built" if module is not None else f"not built ({build_error()})")
    sys.exit(0)
