"""deploylm's C++ kernels (csrc/*.cpp, one extension module), built once per machine with torch's own extension
builder (`torch.utils.cpp_extension.load`: g++ and ninja; `make install` builds it ahead):

- `slab_decode_attention`: decode attention over per-sequence KV slabs (csrc/slab_decode.cpp);
- `int8_linear`: the weight-int8 linear of optimize/weight_int8.py for the few rows of a decode step
  (csrc/int8_linear.cpp);
- `float_linear`: fp32/bf16 decoder linears of a few rows over panel-packed weights (csrc/float_linear.cpp,
  used by runtime/decoder_linear.py);
- `rms_norm`, `add_rms_norm_`, `rotary_`: the lean forward's element-wise ops (csrc/decoder_ops.cpp).

Optional by design: where the module cannot build (no compiler) or a kernel is switched off
($DEPLOYLM_DECODE_KERNEL=0, $DEPLOYLM_INT8_KERNEL=0, $DEPLOYLM_FLOAT_KERNEL=0), torch's own ops run instead, as before.

Built with -fopenmp: its at::parallel_for then runs on the libgomp torch itself loaded (same soname, so the
loader reuses it), on the compute thread's one team (runtime/compute.py). -march=native: the build directory is
keyed by this CPU's instruction-set flags, the sources and where they are, so a cache moved to another CPU builds
anew instead of crashing.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .. import settings

SOURCES = tuple(sorted((Path(__file__).with_name("csrc")).glob("*.cpp")))
_LOCK = threading.Lock()
_STATE: dict = {}


def _cpu_tag() -> str:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                     "")
    except OSError:
        flags = ""
    # The sources' own directory too: torch's builder keys its cache by module name and rebuilds whenever the
    # source paths change, so two checkouts sharing one name would rebuild each other's module at every load.
    where = str(SOURCES[0].parent.resolve()) if SOURCES else ""
    digest = hashlib.sha256((flags + where + "".join(p.read_bytes().hex() for p in SOURCES)).encode()).hexdigest()
    return digest[:10]


def module():
    """The compiled module, or None where it could not be built (the reason in `build_error()`). Built on first
    use, then loaded from torch's extension cache."""
    with _LOCK:
        if "module" not in _STATE:
            _STATE["module"], _STATE["error"] = _build()
        return _STATE["module"]


def kernel():
    """The module for decode attention, or None: switched off ($DEPLOYLM_DECODE_KERNEL=0) or not built."""
    return module() if settings.decode_kernel() else None


def int8_kernel():
    """The module for `int8_linear`, or None: switched off ($DEPLOYLM_INT8_KERNEL=0), not built, or built for a
    CPU with neither AVX-512 VNNI nor AVX2 (its scalar loop is correct but slower than torch's int8 kernels)."""
    if not settings.int8_kernel():
        return None
    built = module()
    return built if built is not None and built.int8_simd() else None


def float_kernel():
    """The module for `float_linear`, or None: switched off ($DEPLOYLM_FLOAT_KERNEL=0), not built, or built for a
    CPU with neither AVX-512 nor AVX2 + FMA (its scalar loop is correct but slower than torch's matmul)."""
    if not settings.float_kernel():
        return None
    built = module()
    return built if built is not None and built.float_simd() else None


def build_error() -> str | None:
    return _STATE.get("error")


def _build():
    try:
        from torch.utils.cpp_extension import load

        built = load(name=f"deploylm_kernels_{_cpu_tag()}", sources=[str(p) for p in SOURCES],
                     extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        return built, None
    except Exception as exc:  # noqa: BLE001 - any build failure means: torch's ops run instead
        return None, f"{type(exc).__name__}: {str(exc)[:500]}"


if __name__ == "__main__":  # `make install`: build it now, say whether it works
    import sys

    built = module()
    if built is None:
        print(f"deploylm C++ kernels: not built ({build_error()}); torch's ops run instead")
    else:
        print("deploylm C++ kernels: built;",
              f"int8 linear on {built.int8_simd()}" if built.int8_simd() else
              "no AVX-512 VNNI or AVX2 here: weight-int8 uses torch's int8 kernels;",
              f"float linear on {built.float_simd()}" if built.float_simd() else "float linears use torch's matmul")
    sys.exit(0)
