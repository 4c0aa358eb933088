"""This CPU's large-matmul throughput (GFLOP/s; GOP/s for int8) on --threads threads: the reference ceiling
that an encoder's achieved GFLOP/s is compared with, by the precision its GEMMs run in.

    python benchmarks/peers/ceilings.py --threads 2 --rounds 7

One square n x n x n product per precision (n = 2304 by default: operands far larger than the caches, and not
a power of two, whose row strides alias in set-associative caches), one untimed call, then --rounds timed calls
each, precisions interleaved round by round (order reversed every other round) so that a slow phase of the
shared host hits all of them alike:
- fp32: `torch.matmul` on float32 (MKL sgemm);
- bf16: `torch.matmul` on bfloat16 tensors (oneDNN `brg_matmul:avx512_core_bf16` on this CPU, per
  `ONEDNN_VERBOSE=1`);
- int8: `torch._int_mm` (int8 x int8 -> int32), which torch hands to oneDNN's s8s8s32 GEMM (`gemm_api` in
  `ONEDNN_VERBOSE=1`); that it runs the VNNI int8 path and not a widening fallback shows in the result,
  several times the fp32 rate. It is
  the same instruction family (u8/s8 dot products) that onnxruntime's MatMulInteger, which deploylm's int8
  variants run, uses. torch.ao's quantized linear (fbgemm) is deprecated, so it is not the reference.
The ceiling is each precision's best round (neighbours only ever slow a round down); the median, min and
every round are reported too. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _operands(n: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    ai = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
    bi = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
    ah, bh = a.bfloat16(), b.bfloat16()
    return {"fp32": lambda: torch.matmul(a, b), "bf16": lambda: torch.matmul(ah, bh),
            "int8": lambda: torch._int_mm(ai, bi)}


def _stats(rates: list[float]) -> dict:
    return {"best": round(max(rates), 1), "median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
            "rounds": [round(r, 1) for r in rates]}


def measure(n: int = 2304, rounds: int = 7, threads: int = 2) -> dict:
    import torch

    torch.set_num_threads(threads)
    ops = _operands(n)
    flop = 2 * n ** 3
    for fn in ops.values():
        fn()  # first call: kernel selection, weight reordering and page-in are not throughput
    rates: dict[str, list[float]] = {k: [] for k in ops}
    started = time.perf_counter()
    for r in range(rounds):
        for key in (list(ops) if r % 2 == 0 else list(reversed(ops))):
            t0 = time.perf_counter()
            ops[key]()
            rates[key].append(flop / (time.perf_counter() - t0) / 1e9)
    stats = {k: _stats(v) for k, v in rates.items()}
    return {"n": n, "threads": threads, "rounds": rounds, "seconds": round(time.perf_counter() - started, 2),
            "kernels": {"fp32": "torch.matmul float32", "bf16": "torch.matmul bfloat16",
                        "int8": "torch._int_mm int8 x int8 -> int32"},
            "stats": stats, "ceiling": {k: v["best"] for k, v in stats.items()}, "torch": torch.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="large-matmul GFLOP/s per precision (the reference ceilings)")
    ap.add_argument("--n", type=int, default=2304)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch starts its pools
        os.environ.setdefault(var, str(args.threads))
    print(json.dumps(measure(args.n, args.rounds, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
