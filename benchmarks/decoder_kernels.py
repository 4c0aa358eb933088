"""Decoder linear kernels, per SmolLM2-135M matrix shape and rows per call -> results/decoder_kernels.md (+ .json).

What it settles: which kernel an Int8Linear uses for a few rows (PLAIN_KERNEL_MAX_ROWS, PLAIN_KERNEL_MAX_OUT in
optimize/weight_int8.py) and whether fp32 decoder linears run faster with [in, out] weights
(runtime/decoder_linear.py). Every kernel runs on the same weights, in rounds that alternate the order; each
figure is the median over rounds of the per-round median call time, with the rounds' [min-max].

    python benchmarks/decoder_kernels.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))

# (in, out) of SmolLM2-135M's linears as the lean forward runs them: fused q/k/v, o, fused gate/up, down, LM head.
SHAPES = {"qkv": (576, 960), "o": (576, 576), "gate_up": (576, 3072), "down": (1536, 576), "lm_head": (576, 49152)}
ROWS = (1, 2, 4, 8, 16)


def _time_call(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def kernels(k: int, n: int) -> dict:
    from deploylm.optimize.weight_int8 import Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(k, n, bias=False)
    int8 = Int8Linear.from_float(linear)
    w_t = linear.weight.detach().t().contiguous()
    plain, scale = int8._plain, int8._plain_scale
    if plain is None:  # too large for the plain path in deploylm: time it anyway, on the same int8 weights
        plain, s = int8.int8_weight()
        scale = s.to(torch.bfloat16)
    packed = int8._packed

    return {
        "fp32 F.linear [out, in]": lambda x: torch.nn.functional.linear(x, linear.weight),
        "fp32 x @ w_t [in, out]": lambda x: x @ w_t,
        "int8 fbgemm": lambda x: torch.ops.quantized.linear_dynamic(x, packed, False),
        "int8 weight-only (torch._weight_int8pack_mm)":
            lambda x: torch._weight_int8pack_mm(x.to(torch.bfloat16), plain, scale).float(),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from deploylm.machine import machine_info

    torch.set_num_threads(args.threads)
    table = {name: kernels(*shape) for name, shape in SHAPES.items()}
    samples: dict[str, list[float]] = {}
    with torch.inference_mode():
        for r in range(args.rounds):
            for name, fns in table.items():
                order = list(fns) if r % 2 == 0 else list(reversed(fns))
                for rows in ROWS:
                    x = torch.randn(rows, SHAPES[name][0])
                    for kernel in order:
                        key = f"{name}|{rows}|{kernel}"
                        samples.setdefault(key, []).append(_time_call(lambda: fns[kernel](x), args.calls))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    doc = {"machine": machine_info(), "args": vars(args), "shapes": SHAPES, "samples_us": samples}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decoder_kernels.json").write_text(json.dumps(doc, indent=1, default=str))
    (RESULTS / "decoder_kernels.md").write_text(report(doc))
    return 0


def report(doc: dict) -> str:
    kernels_ = sorted({k.split("|")[2] for k in doc["samples_us"]})
    m = doc["machine"]
    lines = ["## Decoder linear kernels (SmolLM2-135M shapes)", "",
             f"Command: `python benchmarks/decoder_kernels.py --rounds {doc['args']['rounds']} --threads "
             f"{doc['args']['threads']}`. Machine: {m.get('cpu', '?')}, {doc['args']['threads']} threads. "
             "Median µs per call over rounds (each round: median of "
             f"{doc['args']['calls']} calls), [min–max] of the rounds; the fastest kernel of each row in bold.", "",
             "| matrix (in→out) | rows | " + " | ".join(kernels_) + " |",
             "|---|---|" + "---|" * len(kernels_)]
    for name, (k, n) in doc["shapes"].items():
        for rows in ROWS:
            cells = {}
            for kern in kernels_:
                vals = doc["samples_us"][f"{name}|{rows}|{kern}"]
                cells[kern] = (statistics.median(vals), min(vals), max(vals))
            best = min(cells, key=lambda c: cells[c][0])
            row = [f"{'**' if c == best else ''}{cells[c][0]:.0f}{'**' if c == best else ''} "
                   f"[{cells[c][1]:.0f}–{cells[c][2]:.0f}]" for c in kernels_]
            lines.append(f"| {name} ({k}→{n}) | {rows} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
