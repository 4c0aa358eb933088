"""This machine's memory read bandwidth: the roofline of a decode step, which reads every weight once.
Sums a 256 MB float32 array (far larger than the caches) with numpy (one thread) and with torch
(--threads threads), several rounds each; prints one JSON document with GB/s median, min and max.

    python benchmarks/peers/membw.py --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _rates(fn, nbytes: int, rounds: int) -> list[float]:
    fn()  # first touch and page-in are not bandwidth
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(nbytes / (time.perf_counter() - t0) / 1e9)
    return out


def _stats(rates: list[float]) -> dict:
    return {"median_gbps": round(statistics.median(rates), 2), "min_gbps": round(min(rates), 2),
            "max_gbps": round(max(rates), 2), "rounds": [round(r, 2) for r in rates]}


def measure(mb: int = 256, rounds: int = 7, threads: int = 2) -> dict:
    import numpy as np

    nbytes = mb * 2**20
    a = np.ones(nbytes // 4, dtype=np.float32)
    result = {"bytes": nbytes, "threads": threads, "numpy_sum_1_thread": _stats(_rates(a.sum, nbytes, rounds))}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        t = torch.from_numpy(a)
        result["torch_sum"] = _stats(_rates(t.sum, nbytes, rounds))
        result["versions"] = {"numpy": np.__version__, "torch": torch.__version__}
    # the ceiling is what the faster reader reaches: one numpy thread may not saturate the memory bus
    result["read_gbps"] = max(v["median_gbps"] for k, v in result.items() if isinstance(v, dict) and "median_gbps" in v)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="memory read bandwidth (GB/s)")
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before torch starts its pool
    print(json.dumps(measure(args.mb, args.rounds, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
