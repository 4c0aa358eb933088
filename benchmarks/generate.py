"""Generation benchmark -> benchmarks/results/generate.md (+ generate.json, generate.png).

SmolLM2-135M-Instruct, the same SQuAD-context prompts (128 tokens) and 128 greedy new tokens (EOS ignored) for
every system, the same thread count, rounds interleaved (each round runs every system once, in alternating order):
  deploylm engine in-process (`deploylm bench-generate ART`, one process per variant): fp32, bf16, weight-int8;
  deploylm over HTTP (`deploylm serve` + the official `openai` client, streaming /v1/completions);
  transformers `generate` fp32 at batch 1 and a static batch, transformers' continuous batching (generate_batch);
  llama.cpp (llama-cpp-python, own venv) on GGUF Q8_0 and the packaged Q4_1, single stream and parallel sequences;
  the machine's memory read bandwidth (the decode roofline).
Also: greedy parity with `generate`, and time to first token with a shared 500-token system prompt, prefix cache
on vs off.

    python benchmarks/generate.py [--rounds 3] [--max-tokens 128] [--levels 1,4,16,64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "bench"
sys.path.insert(0, str(ROOT / "src"))


def sh(cmd: list[str], **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kw)


def variants() -> dict[str, Path]:
    """fp32 (import), weight-int8 and bf16 (quantize, gated; kept even if the gate refuses speed, so the benchmark
    can show why: --allow-slower)."""
    deploylm = str(ROOT / ".venv" / "bin" / "deploylm")
    fp32 = RUNS / "smollm2-fp32"
    if not fp32.is_dir():
        sh([deploylm, "import", "smollm2-135m", "--output", str(fp32)])
    out = {"fp32": fp32}
    for method in ("weight-int8", "bf16"):
        path = RUNS / f"smollm2-{method}"
        if not path.is_dir():
            sh([deploylm, "quantize", str(fp32), "--method", method, "--output", str(path), "--allow-slower"])
        out[method] = path
    return out


def engine_levels(art: Path, levels: list[int], prompt_len: int, max_tokens: int, per_stream: int = 1,
                  env: dict | None = None) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        sh([str(ROOT / ".venv" / "bin" / "deploylm"), "bench-generate", str(art), "--concurrency",
            ",".join(map(str, levels)), "--prompt-len", str(prompt_len), "--max-tokens", str(max_tokens),
            "--requests-per-stream", str(per_stream), "--output", f.name], stdout=subprocess.DEVNULL,
           env={**os.environ, **(env or {})})
        return json.loads(Path(f.name).read_text())


def one_then_many(art: Path, levels: list[int], prompt_len: int, max_tokens: int) -> list[dict]:
    """One stream: 4 requests in turn (TTFT p50 over 4, not a single sample), as the HTTP one-client level does;
    more streams: one request each."""
    many = [c for c in levels if c > 1]
    return ((engine_levels(art, [1], prompt_len, max_tokens, per_stream=4) if 1 in levels else [])
            + (engine_levels(art, many, prompt_len, max_tokens) if many else []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_requests(c: int) -> int:
    """One client sends 4 requests in turn on one connection, as the engine's one-stream level does."""
    return 4 if c == 1 else c


def http_levels(art: Path, levels: list[int], pool: list[str], max_tokens: int) -> list[dict]:
    """`pool`: prompts cut by level_slices(levels, http_requests), so no level times a prefix-cache hit."""
    import httpx

    from deploylm.bench.gen_prompts import level_slices
    from deploylm.bench.generate import run_http_level

    slices, total = level_slices(levels, http_requests)
    assert len(pool) >= total, f"{len(pool)} prompts for {total}"

    port = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "deploylm"), "serve", str(art), "--name", "smollm2",
                             "--port", str(port), "--grpc-port", "-1"], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the server says when the model is ready
            if "ready" in line:
                break
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v2/health/ready").status_code == 200
        run_http_level(base, "smollm2", pool[total - 1:total], 8, 1, 1)  # warm-up, on a prompt no level measures
        return [run_http_level(base, "smollm2", pool[part], max_tokens, c, http_requests(c)).as_dict()
                for c, part in slices]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peer_levels(kind: str, model_dir: Path, texts: list[str], max_tokens: int, levels: list[int]) -> list[dict]:
    from deploylm.bench.generate import LevelResult
    from deploylm.bench.generate_peers import run_peer

    out = []
    for c in levels:
        doc = run_peer(kind, model_dir=model_dir, prompts=texts[:max(c, 4)], max_tokens=max_tokens, concurrency=c)
        row = LevelResult.from_peer(kind, c, doc).as_dict()
        row["extra"]["tokens"] = {str(i): r.get("tokens") for i, r in enumerate(doc["rounds"][0]["requests"])}
        out.append(row)
    return out


def prefix_ttft(art: Path, rounds: int = 5) -> dict:
    """TTFT of requests sharing a ~500-token system prompt, prefix cache on vs off, alternating."""
    from deploylm.bench.gen_prompts import squad_contexts
    from deploylm.generation.cli import open_engine
    from deploylm.generation.types import GenerationRequest, SamplingParams

    engines = {on: open_engine(art, prefix_caching=on, max_num_seqs=4) for on in (True, False)}
    tok = engines[True].tokenizer
    system = " ".join(squad_contexts()[:6])
    sys_ids = tok(system).input_ids[:500]
    questions = [f"Question {i}: what is the main topic of the text above?" for i in range(rounds + 1)]
    times = {True: [], False: []}
    try:
        for k, q in enumerate(questions):
            for on, engine in engines.items():
                ids = sys_ids + tok("\n" + q).input_ids
                t0 = time.perf_counter()
                for ev in engine.iterate(GenerationRequest(engine.new_request_id(), ids,
                                                           SamplingParams(max_tokens=1, temperature=0))):
                    pass
                if k:  # the first question fills the cache
                    times[on].append((time.perf_counter() - t0) * 1e3)
    finally:
        for e in engines.values():
            e.close()
    ratios = [off / on for on, off in zip(times[True], times[False])]
    return {"system_prompt_tokens": len(sys_ids), "ttft_ms_cache_on": times[True], "ttft_ms_cache_off": times[False],
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def tie_report(model_dir: Path, prompts_ids: list[list[int]], ref: dict, got: dict) -> dict:
    """For each prompt whose tokens differ from the reference: was the reference's top-two gap at the first
    differing step within float rounding (1e-3 of a logit)?"""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    same, ties, real = 0, 0, 0
    for k, want in ref.items():
        have = got.get(k)
        if have is None or want is None:
            continue
        if have == want:
            same += 1
            continue
        d = next(i for i, (a, b) in enumerate(zip(want, have)) if a != b)
        with torch.inference_mode():
            logits = model(torch.tensor([prompts_ids[int(k)] + want[:d]])).logits[0, -1]
        top = torch.topk(logits, 2).values
        ties += float(top[0] - top[1]) < 1e-3
        real += float(top[0] - top[1]) >= 1e-3
    return {"identical": same, "differ_at_near_tie": ties, "differ_otherwise": real}


def _med(rows: list[dict], key: str) -> tuple[float, float, float]:
    vals = [r[key] for r in rows if r.get(key) == r.get(key) and r.get(key) is not None]  # drop NaN
    return (statistics.median(vals), min(vals), max(vals)) if vals else (float("nan"),) * 3


def level(rounds: list[dict], system: str, c: int) -> list[dict]:
    return [r for rnd in rounds for r in rnd.get(system, []) if r["concurrency"] == c]


def ratio_rounds(rounds, num, den) -> list[float]:
    """num/den per round: each a (system, concurrency, key)."""
    out = []
    for rnd in rounds:
        a = [r[num[2]] for r in rnd.get(num[0], []) if r["concurrency"] == num[1]]
        b = [r[den[2]] for r in rnd.get(den[0], []) if r["concurrency"] == den[1]]
        if a and b and b[0]:
            out.append(a[0] / b[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--extras-only", action="store_true",
                    help="keep the rounds already in results/generate.json; run only parity, prefix TTFT, report")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from deploylm.bench.gen_prompts import benchmark_prompts, level_slices
    from deploylm.bench.generate_peers import measure_bandwidth
    from deploylm.machine import machine_info

    levels = [int(x) for x in args.levels.split(",")]
    arts = variants()
    tok = AutoTokenizer.from_pretrained(arts["fp32"])
    texts = benchmark_prompts(max(levels), args.prompt_len, tok)  # the peers' prompts, and parity's
    http_pool = benchmark_prompts(level_slices([1, 16], http_requests)[1], args.prompt_len, tok)
    mt, fp32 = args.max_tokens, arts["fp32"]
    systems = {
        "deploylm-weight-int8": lambda: one_then_many(arts["weight-int8"], levels, args.prompt_len, mt),
        # ablation: the same artifact through transformers' forward instead of the lean one (decoder_fastpath.py)
        "deploylm-weight-int8-hf-forward": lambda: engine_levels(arts["weight-int8"], [1, 16], args.prompt_len, mt,
                                                                 env={"DEPLOYLM_DECODER_FAST_PATH": "0"}),
        "deploylm-fp32": lambda: (engine_levels(fp32, [1], args.prompt_len, mt, per_stream=4)
                                  + engine_levels(fp32, [16], args.prompt_len, mt)),
        # ablation: the same fp32 artifact with torch's matmul instead of the C++ float linear (decoder_linear.py)
        "deploylm-fp32-torch-linear": lambda: engine_levels(fp32, [1], args.prompt_len, mt, per_stream=4,
                                                            env={"DEPLOYLM_FLOAT_KERNEL": "0"}),
        "deploylm-bf16": lambda: engine_levels(arts["bf16"], [1], args.prompt_len, mt),
        "deploylm-http-int8": lambda: http_levels(arts["weight-int8"], [1, 16], http_pool, mt),
        "hf": lambda: peer_levels("hf", fp32, texts, mt, [1]),
        "hf-static": lambda: peer_levels("hf-static", fp32, texts, mt, [16]),
        "hf-cb": lambda: peer_levels("hf-cb", fp32, texts, mt, [16]),
        "llama-cpp": lambda: peer_levels("llama-cpp", fp32, texts, mt, [1, 16]),
        "llama-cpp-q4": lambda: peer_levels("llama-cpp-q4", fp32, texts, mt, [1, 16]),
    }
    rounds = json.loads((RESULTS / "generate.json").read_text())["rounds"] if args.extras_only else []
    for k in range(0 if args.extras_only else args.rounds):
        order = list(systems) if k % 2 == 0 else list(reversed(systems))
        rnd = {"membw": measure_bandwidth(rounds=5)}
        for name in order:
            print(f"== round {k + 1}/{args.rounds}: {name}", flush=True)
            rnd[name] = systems[name]()
        rounds.append(rnd)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "generate.json").write_text(json.dumps({"rounds": rounds}, indent=1, default=str))
    extra = {}
    if args.extras_only and "prefix_cache" in json.loads((RESULTS / "generate.json").read_text()).get("extra", {}):
        extra["prefix_cache"] = json.loads((RESULTS / "generate.json").read_text())["extra"]["prefix_cache"]
    else:
        extra["prefix_cache"] = prefix_ttft(arts["weight-int8"])
    ids = [tok(t).input_ids for t in texts]
    ref = rounds[0]["hf"][0]["extra"]["tokens"]
    if not any(ref.values()):  # rounds recorded before the peer's token ids were kept: run the reference again
        ref = peer_levels("hf", fp32, texts, mt, [1])[0]["extra"]["tokens"]
    extra["parity_fp32_alone"] = tie_report(fp32, ids, ref, rounds[0]["deploylm-fp32"][0]["extra"]["tokens"])
    extra["parity_fp32_batch16"] = tie_report(fp32, ids, ref, rounds[0]["deploylm-fp32"][1]["extra"]["tokens"])
    extra["gates"] = {m: json.loads((p / "manifest.json").read_text()).get("gate") for m, p in arts.items()
                      if m != "fp32"}
    args.rounds = len(rounds)
    doc = {"rounds": rounds, "extra": extra, "machine": machine_info(), "args": vars(args),
           "params": json.loads((fp32 / "manifest.json").read_text())["decoder"]["params"]}
    (RESULTS / "generate.json").write_text(json.dumps(doc, indent=1, default=str))
    from generate_report import write_report  # noqa: E402  (beside this script)

    write_report(doc, RESULTS)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
