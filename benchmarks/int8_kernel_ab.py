"""Decode steps of a weight-int8 SmolLM2 on deploylm's C++ int8 linear vs torch's int8 kernels (fbgemm and
torch's weight-only kernel: optimize/int8_matmul.py), two runners on the same int8 weights alternating in one
process; 1 and 16 streams, 128 tokens of context; median ms per step of each round.

    python benchmarks/int8_kernel_ab.py [INT8_ARTIFACT] [--rounds 3]
        # default runs/bench/smollm2-weight-int8 (deploylm quantize ... --method weight-int8)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from deploylm.generation.types import SeqChunk, StepBatch
from deploylm.optimize.weight_int8 import load_int8_model
from deploylm.runtime.compute import run_on_compute
from deploylm.runtime.decoder_runner import TorchDecoderRunner

CONTEXT = 128


def load(path: str, kernel: str) -> TorchDecoderRunner:
    os.environ["DEPLOYLM_INT8_KERNEL"] = "1" if kernel == "deploylm" else "0"  # read when the weights are set
    runner = run_on_compute(lambda: TorchDecoderRunner(load_int8_model(path), "weight-int8"))
    want = "deploylm" if kernel == "deploylm" else "fbgemm"
    kinds = {type(m._matmul).__name__ for m in runner.model.modules() if hasattr(m, "_matmul")}
    assert kinds == {"VnniMatmul" if want == "deploylm" else "TorchMatmul"}, kinds
    return runner


def step_ms(runner: TorchDecoderRunner, rows: int, steps: int = 30) -> float:
    ids = list(range(100, 100 + rows))
    runner.step(StepBatch(chunks=[SeqChunk(i, [1] * CONTEXT, 0, False) for i in ids], reserve={i: 1024 for i in ids}))
    times = []
    for p in range(steps):
        t0 = time.perf_counter()
        runner.step(StepBatch(chunks=[SeqChunk(i, [5], CONTEXT + p, True) for i in ids]))
        times.append(time.perf_counter() - t0)
    runner.step(StepBatch([], free=ids))
    return statistics.median(times[3:]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", nargs="?", default="runs/bench/smollm2-weight-int8")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runners = {k: load(args.artifact, k) for k in ("deploylm", "torch")}
    results = {(k, rows): [] for k in runners for rows in (1, 16)}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for rows in (1, 16):
            for k in order:
                results[k, rows].append(step_ms(runners[k], rows))
                print(f"round {r} rows={rows:2d} {k:8s}: {results[k, rows][-1]:.1f} ms/step", flush=True)
    for rows in (1, 16):
        a, b = results["deploylm", rows], results["torch", rows]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"rows={rows:2d}: deploylm {statistics.median(a):.1f} ms [{min(a):.1f}-{max(a):.1f}], torch "
              f"{statistics.median(b):.1f} ms [{min(b):.1f}-{max(b):.1f}]; speed-up per round "
              + " / ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
