"""Decode steps with the C++ decode-attention kernel vs SDPA per sequence, alternating in one process
(weight-int8 of the fp32 SmolLM2 artifact, quantised in memory; 1 and 16 streams, 128 tokens of context).

    python benchmarks/decode_kernel_ab.py [ARTIFACT]   # default runs/smollm2 (deploylm import smollm2-135m)
"""
import sys, time, statistics
import torch
from deploylm.generation.types import SeqChunk, StepBatch
from deploylm.runtime.decoder_runner import TorchDecoderRunner
from deploylm.runtime.compute import run_on_compute
from deploylm.optimize.weight_int8 import quantize_linears
from transformers import AutoModelForCausalLM
def load():
    model = AutoModelForCausalLM.from_pretrained((sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2"), dtype=torch.float32).eval()
    quantize_linears(model)
    return TorchDecoderRunner(model, "weight-int8")
runner = run_on_compute(load)
kern = runner._kernel
assert kern is not None
ctx = 128
def run(rows, n=30):
    ids = list(range(100, 100 + rows))
    runner.step(StepBatch(chunks=[SeqChunk(i, [1] * ctx, 0, False) for i in ids], reserve={i: 1024 for i in ids}))
    times = []
    for p in range(n):
        t0 = time.perf_counter()
        runner.step(StepBatch(chunks=[SeqChunk(i, [5], ctx + p, True) for i in ids]))
        times.append(time.perf_counter() - t0)
    runner.step(StepBatch([], free=ids))
    return statistics.median(times[3:]) * 1e3
for r in range(3):
    for rows in (1, 16):
        for name, k in (("kernel", kern), ("sdpa", None)) if r % 2 == 0 else (("sdpa", None), ("kernel", kern)):
            runner._kernel = k
            print(f"round {r} rows={rows:2d} {name:6s}: {run(rows):.1f} ms/step", flush=True)
