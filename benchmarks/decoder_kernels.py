"""Decoder linear kernels, per SmolLM2-135M matrix shape and rows per call -> results/decoder_kernels.md (+ .json).

What it settles: deploylm's C++ int8 linear (runtime/csrc/int8_linear.cpp) against torch's int8 kernels on the
same int8 weights, which torch kernel the fallback uses for a few rows (PLAIN_KERNEL_MAX_ROWS, PLAIN_KERNEL_MAX_OUT
in optimize/int8_matmul.py), and deploylm's C++ float linear on panel-packed fp32 / bf16 weights against torch's
fp32 products (runtime/decoder_linear.py, up to its FEW_ROWS). Every kernel runs on the same weights, in rounds that alternate the order; each
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


LAYERS = 30  # SmolLM2-135M: each kernel reads 30 distinct copies of a matrix, as a decode step does


def _weights(k: int, n: int, seed: int) -> dict:
    """One matrix in each kernel's layout (same values: int8 on the levels fbgemm takes everywhere)."""
    from deploylm.optimize.int8_matmul import TorchMatmul, VnniMatmul
    from deploylm.optimize.weight_int8 import SAFE_LEVELS, Int8Linear
    from deploylm.runtime import cpp_kernels

    torch.manual_seed(seed)
    linear = nn.Linear(k, n, bias=False)
    plain, s = Int8Linear.from_float(linear, SAFE_LEVELS).int8_weight()
    module = cpp_kernels.int8_kernel()
    if module is None:
        raise SystemExit(f"deploylm's int8 kernel is not available here ({cpp_kernels.build_error() or 'no VNNI'})")
    from deploylm.runtime.decoder_linear import PackedLinear

    floats = cpp_kernels.float_kernel()
    return {"w": linear.weight.detach(), "w_t": linear.weight.detach().t().contiguous(),
            "float32_packed": PackedLinear(linear, floats),
            "bf16_packed": PackedLinear(nn.Linear(k, n, bias=False).to(torch.bfloat16).requires_grad_(False), floats),
            "packed": TorchMatmul(plain, s)._packed, "vnni": VnniMatmul(module, plain, s),
            "plain": plain.contiguous(), "scale": s.to(torch.bfloat16)}


KERNELS = {
    "fp32 F.linear [out, in]": lambda x, m: torch.nn.functional.linear(x, m["w"]),
    "fp32 x @ w_t [in, out]": lambda x, m: x @ m["w_t"],
    "fp32 deploylm (C++, packed panels)": lambda x, m: m["float32_packed"](x),
    "bf16 weights deploylm (C++, packed panels, fp32 activations)": lambda x, m: m["bf16_packed"](x),
    "int8 fbgemm": lambda x, m: torch.ops.quantized.linear_dynamic(x, m["packed"], False),
    "int8 weight-only (torch._weight_int8pack_mm)":
        lambda x, m: torch._weight_int8pack_mm(x.to(torch.bfloat16), m["plain"], m["scale"]).float(),
    # rotation block 64 as SmolLM2's linears use: the C++ kernel rotates inside, the torch kernels above do not
    "int8 deploylm (C++, incl. rotation)": lambda x, m: m["vnni"](x, None, 64),
}


def step_times(kernel: str, layers: list[dict], head: dict, rows: int) -> dict[str, float]:
    """One simulated decode step with `kernel`: every layer's matrices in order, then the head, each call timed;
    median µs per matrix kind. The weights come from memory, not cache, as in a real step."""
    fn, times = KERNELS[kernel], {}
    xs = {name: torch.randn(rows, k) for name, (k, _) in SHAPES.items()}
    for layer in layers + [head]:
        for name, mats in layer.items():
            t0 = time.perf_counter()
            fn(xs[name], mats)
            times.setdefault(name, []).append((time.perf_counter() - t0) * 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from deploylm.machine import machine_info

    torch.set_num_threads(args.threads)
    body = {n: s for n, s in SHAPES.items() if n != "lm_head"}
    layers = [{name: _weights(k, n, seed=i * 10 + j) for j, (name, (k, n)) in enumerate(body.items())}
              for i in range(LAYERS)]
    head = {"lm_head": _weights(*SHAPES["lm_head"], seed=999)}
    samples: dict[str, list[float]] = {}
    with torch.inference_mode():
        for kernel in KERNELS:  # warm-up: first calls allocate and pack
            step_times(kernel, layers[:2], head, 1)
        for r in range(args.rounds):
            order = list(KERNELS) if r % 2 == 0 else list(reversed(KERNELS))
            for rows in ROWS:
                for kernel in order:
                    for name, us in step_times(kernel, layers, head, rows).items():
                        samples.setdefault(f"{name}|{rows}|{kernel}", []).append(us)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    doc = {"machine": machine_info(), "args": {**vars(args), "calls": LAYERS}, "shapes": SHAPES,
           "samples_us": samples}
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
             "Each round simulates decode steps: every kernel reads 30 distinct copies of each matrix "
             "(one per layer, so weights come from memory as in a real step; the LM head once). Median µs per call "
             "over rounds (each round: the median over the 30 layers), [min–max] of the rounds; the fastest kernel "
             "of each row in bold.", "",
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
