"""benchmarks/results/generate.json -> generate.md + generate.png (used by benchmarks/generate.py; re-run alone with
`python benchmarks/generate_report.py` to re-render without measuring)."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BYTES_PER_WEIGHT = {"deploylm-fp32": 4, "hf": 4, "deploylm-bf16": 2, "deploylm-weight-int8": 1, "llama-cpp": 34 / 32,
                    "llama-cpp-q4": 20 / 32}  # Q8_0: 32 int8 + one fp16 scale per block; Q4_1: 16 bytes + 2 fp16


def vals(rounds, system, c, key):
    out = []
    for rnd in rounds:
        for r in rnd.get(system, []):
            v = r.get(key)
            if r["concurrency"] == c and v is not None and not (isinstance(v, float) and math.isnan(v)):
                out.append(v)
    return out


def fmt(xs, digits=1):
    if not xs:
        return "–"
    med = statistics.median(xs)
    return f"{med:.{digits}f} [{min(xs):.{digits}f}–{max(xs):.{digits}f}]"


def per_round(rounds, num, den):
    out = []
    for rnd in rounds:
        a = [r[num[2]] for r in rnd.get(num[0], []) if r["concurrency"] == num[1]]
        b = [r[den[2]] for r in rnd.get(den[0], []) if r["concurrency"] == den[1]]
        if a and b and a[0] == a[0] and b[0]:
            out.append(a[0] / b[0])
    return out


TARGETS = [  # (what, numerator, denominator, threshold, kind) kind "ratio": >= threshold; "diff": <= threshold
    ("single stream: weight-int8 vs llama.cpp Q8_0 (decode tok/s)", ("deploylm-weight-int8", 1, "per_stream_tok_s"),
     ("llama-cpp", 1, "per_stream_tok_s"), 0.8, "ratio"),
    ("single stream: fp32 vs transformers generate fp32", ("deploylm-fp32", 1, "per_stream_tok_s"),
     ("hf", 1, "per_stream_tok_s"), 2.0, "ratio"),
    ("16 streams: weight-int8 aggregate vs llama.cpp Q8_0 16 parallel sequences",
     ("deploylm-weight-int8", 16, "aggregate_tok_s"), ("llama-cpp", 16, "aggregate_tok_s"), 2.0, "ratio"),
    ("16 streams vs our own single stream (weight-int8, aggregate)", ("deploylm-weight-int8", 16, "aggregate_tok_s"),
     ("deploylm-weight-int8", 1, "aggregate_tok_s"), 6.0, "ratio"),
    ("ablation: lean forward vs transformers' forward (weight-int8, one stream)",
     ("deploylm-weight-int8", 1, "per_stream_tok_s"), ("deploylm-weight-int8-hf-forward", 1, "per_stream_tok_s"), 1.0,
     "ratio"),
    ("ablation: C++ float linear vs torch's matmul on the same packed weights (fp32, one stream)",
     ("deploylm-fp32", 1, "per_stream_tok_s"), ("deploylm-fp32-torch-linear", 1, "per_stream_tok_s"), 1.0, "ratio"),
    ("single stream: bf16 vs fp32 (a gated variant must not be slower than its parent)",
     ("deploylm-bf16", 1, "per_stream_tok_s"), ("deploylm-fp32", 1, "per_stream_tok_s"), 1.0, "ratio"),
    ("16 streams over HTTP (openai client) vs the engine's own (weight-int8)",
     ("deploylm-http-int8", 16, "aggregate_tok_s"), ("deploylm-weight-int8", 16, "aggregate_tok_s"), 0.85, "ratio"),
]


NOTES = """
### What this says

- This run is on an AVX2 host (no AVX-512: see the machine line); the run before it, on an AVX-512 VNNI host, is
  in git history (`git log benchmarks/results/generate.md`). deploylm's C++ int8 and float linears gained AVX2
  loops for this (`runtime/csrc/int8_linear.cpp`: exact u8 x s8 sums with the sign trick, since AVX2 has no
  VNNI; `float_linear.cpp`); without them this CPU ran torch's kernels. `python benchmarks/decoder_kernels.py`
  times them per matrix shape: on AVX2 the int8 kernel leads at 1-4 rows and fbgemm at 8-16.
- Met in most rounds: fp32 vs `generate` (3 of 3); bf16 faster than its fp32 parent (3 of 3); prefix caching's
  TTFT gain (5 of 5 requests); greedy parity with `generate` alone and inside a batch of 16; both ablations
  (lean forward, C++ float linear); 16 streams over HTTP within 0.85x of the engine (2 of 3).
- Not met: weight-int8 vs llama.cpp Q8_0 at one stream (median 0.80x, met in 1 of 3: llama.cpp's AVX2 Q8_0 path
  is mature, ours is new); 16 streams vs llama.cpp (1.03x, target 2x) and vs our own single stream (2.4x, target
  6x: on this CPU a 128-token prefill costs about as much as 20 decode steps, and all 16 prefills sit inside the
  measured window); TTFT over HTTP within 5 ms of the engine's (+18 ms median; round 1's +139 ms was one slow
  sample on a loaded host).
- Sampling: the one-stream levels send 4 requests (TTFT p50 over 4), and every level runs prompts that neither
  the warm-up nor an earlier level ran, so no TTFT is a prefix-cache hit (the previous run's one-stream TTFT was).
"""


def write_report(doc: dict, out_dir: Path) -> None:
    rounds, extra = doc["rounds"], doc.get("extra", {})
    n = len(rounds)
    args = doc.get("args", {})
    lines = ["## Generation (SmolLM2-135M-Instruct)\n",
             f"Command: `python benchmarks/generate.py --rounds {args.get('rounds')} --max-tokens "
             f"{args.get('max_tokens')} --prompt-len {args.get('prompt_len')} --levels {args.get('levels')}` "
             f"(one run; {n} rounds, each running every system once, order alternating). Machine: "
             f"{doc.get('machine', {}).get('cpu', '?')} ({doc.get('machine', {}).get('simd', 'SIMD level not recorded')}), "
             f"{doc.get('machine', {}).get('cores', '?')} cores, 2 threads everywhere. "
             "Every request: a 128-token SQuAD-context prompt, 128 greedy new tokens, EOS ignored. Figures are the "
             "median over rounds with [min–max] of the rounds.\n",
             "| system | streams | aggregate tok/s | per-stream decode tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms "
             "| ITL p99 ms | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    systems = sorted({s for rnd in rounds for s in rnd if s != "membw"})
    for s in systems:
        for c in sorted({r["concurrency"] for rnd in rounds for r in rnd.get(s, [])}):
            lines.append(f"| {s} | {c} | {fmt(vals(rounds, s, c, 'aggregate_tok_s'))} | "
                         f"{fmt(vals(rounds, s, c, 'per_stream_tok_s'))} | {fmt(vals(rounds, s, c, 'ttft_p50_ms'), 0)} | "
                         f"{fmt(vals(rounds, s, c, 'ttft_p99_ms'), 0)} | {fmt(vals(rounds, s, c, 'itl_p50_ms'))} | "
                         f"{fmt(vals(rounds, s, c, 'itl_p99_ms'))} | {fmt(vals(rounds, s, c, 'peak_rss_mb'), 0)} |")
    bw = [(r["membw"].get("torch_sum") or {}).get("median_gbps")
          for r in rounds if r.get("membw")]
    bw = [b for b in bw if b]
    lines += ["", "### Targets, round by round\n", "| target | per-round ratios | median | met in |", "|---|---|---|---|"]
    for what, num, den, thr, kind in TARGETS:
        rs = per_round(rounds, num, den)
        met = sum(r >= thr for r in rs)
        lines.append(f"| {what} ≥ {thr}× | {', '.join(f'{r:.2f}' for r in rs) or '–'} | "
                     f"{statistics.median(rs):.2f} | {met}/{len(rs)} rounds |" if rs else f"| {what} | – | – | – |")
    http1 = vals(rounds, "deploylm-http-int8", 1, "ttft_p50_ms")
    eng1 = vals(rounds, "deploylm-weight-int8", 1, "ttft_p50_ms")
    diffs = [a - b for a, b in zip(http1, eng1)]
    if diffs:
        lines.append(f"| TTFT over HTTP at 1 client − engine's own (weight-int8) ≤ 5 ms | "
                     f"{', '.join(f'{d:+.1f} ms' for d in diffs)} | {statistics.median(diffs):+.1f} ms | "
                     f"{sum(d <= 5 for d in diffs)}/{len(diffs)} rounds |")
    pc = extra.get("prefix_cache")
    if pc:
        lines.append(f"| TTFT with a shared {pc['system_prompt_tokens']}-token system prompt, prefix cache off / on ≥ 5× "
                     f"| {', '.join(f'{a / b:.1f}' for a, b in zip(pc['ttft_ms_cache_off'], pc['ttft_ms_cache_on']))} "
                     f"| {pc['ratio_median']:.1f} | {sum((a / b) >= 5 for a, b in zip(pc['ttft_ms_cache_off'], pc['ttft_ms_cache_on']))}"
                     f"/{len(pc['ttft_ms_cache_on'])} requests |")
    lines += ["", "### Roofline\n", f"Memory read bandwidth measured in each round (torch sum over 256 MB): "
              f"{fmt(bw)} GB/s. A batch-1 decode step reads every weight once, so tokens/s ≤ bandwidth / weight bytes.\n",
              "| system | weight bytes / step | ceiling tok/s (median bandwidth) | measured single-stream tok/s | share |",
              "|---|---|---|---|---|"]
    params = doc.get("params") or 134.5e6
    for s, bpw in BYTES_PER_WEIGHT.items():
        got = vals(rounds, s, 1, "per_stream_tok_s")
        if not got or not bw:
            continue
        weight_bytes = params * bpw
        ceiling = statistics.median(bw) * 1e9 / weight_bytes
        lines.append(f"| {s} | {weight_bytes / 1e6:.0f} MB | {ceiling:.0f} | {statistics.median(got):.1f} | "
                     f"{statistics.median(got) / ceiling:.0%} |")
    for key, label in (("parity_fp32_alone", "alone"), ("parity_fp32_batch16", "inside a batch of 16")):
        p = extra.get(key)
        if p:
            lines.append(f"\nGreedy parity, deploylm fp32 {label} vs transformers `generate` fp32 (128 tokens): "
                         f"{p['identical']} prompts identical, {p['differ_at_near_tie']} differ first where the top-two "
                         f"logits are within 1e-3 (float rounding), {p['differ_otherwise']} differ otherwise.")
    for method, gate in (extra.get("gates") or {}).items():
        if gate:
            lines.append(f"\nGate of `{method}` (from its manifest): `{json.dumps(gate, default=str)[:600]}`")
    lines.append(NOTES)
    lines.append("\n![aggregate tokens/s by streams](generate.png)\n")
    (out_dir / "generate.md").write_text("\n".join(lines) + "\n")
    _plot(rounds, systems, out_dir / "generate.png")


def _plot(rounds, systems, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in systems:
        cs = sorted({r["concurrency"] for rnd in rounds for r in rnd.get(s, [])})
        meds = [statistics.median(vals(rounds, s, c, "aggregate_tok_s") or [float("nan")]) for c in cs]
        lo = [min(vals(rounds, s, c, "aggregate_tok_s") or [float("nan")]) for c in cs]
        hi = [max(vals(rounds, s, c, "aggregate_tok_s") or [float("nan")]) for c in cs]
        ax.errorbar(cs, meds, yerr=[[m - a for m, a in zip(meds, lo)], [b - m for m, b in zip(meds, hi)]],
                    marker="o", capsize=3, label=s)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("aggregate decode tokens/s")
    ax.set_title("SmolLM2-135M, 128-token prompts, 128 new tokens (median, round min–max)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    results = HERE / "results"
    write_report(json.loads((results / "generate.json").read_text()), results)
    sys.exit(0)
