"""Serving benchmark -> benchmarks/results/serve.md (+ serve.json, serve_latency.png).

Compared in one run, for the fine-tuned fp32 model (torch runner) and its gated ONNX int8 variant (what `make demo`
ships):
  (a) the raw runner in-process (tokenize + run + decode): batch 32 in arrival order (the ceiling a server
      could reach), and batch 1 (the floor of a single request's latency);
  (b) `deploylm serve` over HTTP (/v1 predict) and gRPC (OIP ModelInfer) at concurrency 1/8/32/64,
      one text per request, closed loop (deploylm.serving.loadgen, the engine of `deploylm bench-serve`);
  (c) a naive baseline written below: FastAPI + transformers `pipeline` on the fp32 model, one forward
      pass per request, no batching.

Rounds (--rounds, 5 by default) each run every measurement once, in ABBA order: the round's list of measurements
(each model's raw runner, each protocol x concurrency point, each naive point) runs forward in even rounds and
backward in odd ones, so a slow phase of this shared host that drifts across a round weighs on both sides of
every ratio alike. Every ratio is taken within one round; the report gives its median over rounds with the
smallest and largest round, and a target counts as met only when it holds in most rounds (more than half).

The naive baseline is made as fast as its design allows, so the ratio measures batching, not a handicap: one
uvicorn worker process (as `deploylm serve` runs), an `async def` handler that hands each forward pass to one
dedicated thread, one pass at a time, while the event loop parses the next requests; torch on the server's
intra-op thread count and thread environment (it inherits this script's, set by settings.use_serving_threads).
A sync handler, as FastAPI is usually first written, runs on Starlette's thread pool: dozens of forward passes at
once, each with its own torch thread team on the same cores, which made that server slower as clients were
added (an earlier version of this script measured it so). The naive server is measured at every concurrency
level and compared at its best level in each round (the report names it), while the served side is held to c=32.

Targets: HTTP throughput at c=32 >= 0.85x raw batch 32 (same model) and >= 5x the naive server (which serves
fp32: for the int8 model that ratio compares different precisions, and the report says so); HTTP p50 at c=1 <=
raw batch-1 p50 + 2 ms. The batch-1 comparison alternates blocks of raw, HTTP and gRPC calls on the same texts
(order reversed every other block), so that the host's slow phases hit every side alike.

    python benchmarks/serve.py [--model DIR] [--int8 DIR] [--duration 10] [--rounds 5] [--blocks 6]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCH_MODEL = ROOT / "runs" / "bench" / "sst2-minilm"
DEV_MODEL = ROOT / "runs" / "dev" / "serve-sst2"
LEVELS = (1, 8, 32, 64)


# ---- (c) the naive baseline: the server people write first, in its fair form (module docstring) ----
def naive_server(artifact: str, port: int) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    from deploylm import settings

    torch.set_num_threads(settings.num_threads())
    pipe = pipeline("text-classification", model=artifact, tokenizer=artifact, device="cpu")
    forward = ThreadPoolExecutor(1, thread_name_prefix="naive-forward")  # one pass at a time: see the docstring
    app = FastAPI()

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, body: dict):
        out = await asyncio.get_running_loop().run_in_executor(forward, pipe, body["inputs"][0])
        return {"predictions": [out[0]]}

    @app.get("/ready")
    def ready():
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- helpers ------------------------------------------------------------------------------------
def describe(model: Path) -> str:
    """What a fine-tuned artifact is, from its manifest (a stand-in is then visibly not the full-data model)."""
    try:
        m = json.loads((model / "manifest.json").read_text())
        cfg = m["config"]
        samples = cfg.get("max_train_samples") or "all"
        metrics = "; ".join(f"{split} accuracy {v['accuracy'] * 100:.2f} %" for split, v in m.get("metrics", {}).items()
                            if isinstance(v, dict) and "accuracy" in v)
        return (f"{cfg['model']} fine-tuned on {samples} {cfg['data']} examples, {cfg['epochs']:g} epoch(s), "
                f"learning rate {cfg['learning_rate']:g}; {metrics or 'no accuracy recorded'}")
    except (OSError, KeyError, TypeError, ValueError):
        return "no readable manifest"


def pick_model(arg: str | None) -> tuple[Path, str]:
    if arg:
        return Path(arg), f"given with --model: {describe(Path(arg))}"
    if (BENCH_MODEL / "manifest.json").is_file():
        return BENCH_MODEL, "runs/bench/sst2-minilm (the lead's benchmark model)"
    if not (DEV_MODEL / "manifest.json").is_file():
        print("runs/bench/sst2-minilm is missing: fine-tuning a stand-in (2000 SST-2 examples, 1 epoch)", flush=True)
        subprocess.run([str(ROOT / ".venv" / "bin" / "deploylm"), "finetune", "--model", "minilm-l6", "--task",
                        "classification", "--data", "sst2", "--output", str(DEV_MODEL), "--max-train-samples",
                        "2000", "--epochs", "1"], check=True)
    return DEV_MODEL, "runs/dev/serve-sst2 (stand-in: minilm-l6 fine-tuned on 2000 SST-2 examples, 1 epoch)"


def find_int8(model: Path) -> Path | None:
    """An ONNX int8 artifact derived from `model` (made by `deploylm quantize`), if one exists in runs/;
    the default recipe (dynamic-int8, first-token last layer: what the pipeline ships) before any other."""
    found = []
    for manifest in sorted((ROOT / "runs").glob("*/*/manifest.json")):
        m = json.loads(manifest.read_text())
        parent = (m.get("parent") or {}).get("path", "")
        if m.get("format") == "onnx" and "int8" in json.dumps(m.get("config", {})) and \
                Path(parent).resolve() == model.resolve():
            default = m.get("method") == "dynamic-int8" and not m["config"].get("all_tokens_last_layer", True)
            found.append((not default, str(manifest), manifest.parent))
    return min(found)[2] if found else None


def start(cmd: list[str], ready_url_from_log, log: Path, env=None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env or os.environ.copy())
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        url = ready_url_from_log(log.read_text())
        if url:
            try:
                if httpx.get(url[1], timeout=2).status_code == 200:
                    return proc, url[0]
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


_POOL = None  # one worker thread runs every raw call, as the server's batcher thread does
_RAW: dict = {}


def _in_worker(fn, *args):
    """Raw calls are made from a worker thread, as the server's batcher thread makes them."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor

    _POOL = _POOL or ThreadPoolExecutor(1)
    return _POOL.submit(fn, *args).result()


def raw_predictor(key: str, artifact):
    """task.predict on the artifact's own runner (tokenize + run + decode), opened once per variant."""
    if key not in _RAW:
        from deploylm.evaluation import load_tokenizer
        from deploylm.runtime import open_runner
        from deploylm.tasks import get_task

        runner, tok, task = _in_worker(lambda: (open_runner(artifact), load_tokenizer(artifact), get_task(artifact.task)))
        _RAW[key] = lambda batch: task.predict(runner, tok, batch, artifact.labels, artifact.max_length, 32)
    return _RAW[key]


def raw_throughput(predict, texts: list[str], seconds: float) -> float:
    """Batch 32 in arrival order: the ceiling a server that batches perfectly could reach."""
    def loop() -> float:
        predict(texts[:32])
        done, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            batch = texts[i: i + 32] or texts[:32]
            predict(batch)
            done += len(batch)
            i = (i + 32) % len(texts)
        return done / (time.perf_counter() - t0)

    return _in_worker(loop)


def interleaved_batch1(predict, url: str, grpc_target: str, model: str, texts: list[str], blocks: int,
                       per_block: int = 40, settle: int = 5) -> dict:
    """Batch-1 latency of the raw runner, HTTP and gRPC in alternating blocks of `per_block` calls on the
    same texts (raw, HTTP, gRPC, then gRPC, HTTP, raw, ...); the first `settle` calls of each block are not
    recorded. Blocks, not single alternating
    calls: the server and this process each hold a copy of the model, and switching between them on
    every call measured mostly cache and thread wake-up effects of the switch (in a trial run, HTTP
    p50 alternating call by call came out far above the same server's closed-loop c=1 p50)."""
    import asyncio

    import aiohttp
    import grpc

    from deploylm.serving import oip
    from deploylm.serving.proto import open_inference_pb2 as pb
    from deploylm.serving.proto import open_inference_pb2_grpc as pb_grpc

    def raw_block(chunk: list[str]) -> list[float]:
        out = []
        for text in chunk:
            t0 = time.perf_counter()
            predict([text])
            out.append((time.perf_counter() - t0) * 1000)
        return out

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        out = {"raw": [], "http": [], "grpc": []}
        async with aiohttp.ClientSession(url) as session, grpc.aio.insecure_channel(grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def http(text: str) -> None:
                async with session.post(f"/v1/models/{model}/predict", json={"inputs": [text]}) as response:
                    await response.read()
                    assert response.status == 200, response.status

            async def grpc_call(text: str) -> None:
                req = pb.ModelInferRequest(model_name=model, raw_input_contents=[oip.join_bytes_tensor([text.encode()])])
                req.inputs.add(name=oip.INPUT_NAME, datatype="BYTES", shape=[1])
                await stub.ModelInfer(req, timeout=60)

            async def timed(send, chunk: list[str]) -> list[float]:
                lat = []
                for text in chunk:
                    t0 = time.perf_counter()
                    await send(text)
                    lat.append((time.perf_counter() - t0) * 1000)
                return lat

            sides = {"raw": lambda chunk: loop.run_in_executor(_POOL, raw_block, chunk),
                     "http": lambda chunk: timed(http, chunk), "grpc": lambda chunk: timed(grpc_call, chunk)}
            for b in range(blocks):
                chunk = [texts[(b * per_block + k) % len(texts)] for k in range(per_block)]
                for side in (list(sides) if b % 2 == 0 else list(reversed(sides))):
                    out[side].append(await sides[side](chunk))
        return out

    lat = asyncio.run(run())
    p50 = {k: np.array([np.median(block[settle:]) for block in v]) for k, v in lat.items()}
    flat = {k: [x for block in v for x in block[settle:]] for k, v in lat.items()}
    return {"raw_p50_ms": float(np.median(flat["raw"])), "raw_p99_ms": float(np.percentile(flat["raw"], 99)),
            "http_p50_ms": float(np.median(flat["http"])), "grpc_p50_ms": float(np.median(flat["grpc"])),
            "http_overhead_ms": float(np.median(p50["http"] - p50["raw"])),
            "grpc_overhead_ms": float(np.median(p50["grpc"] - p50["raw"])), "latencies_ms": flat}


def batch_stats(url: str, name: str) -> tuple[float, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    vals = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("model") == name and s.name in ("deploylm_batch_size_sum", "deploylm_batch_size_count")}
    return vals.get("deploylm_batch_size_sum", 0.0), vals.get("deploylm_batch_size_count", 0.0)


def run_level(name: str, url: str, grpc_target: str | None, model: str, texts, c: int, args) -> dict:
    from deploylm.serving.loadgen import run_levels

    before = batch_stats(url, model) if name != "naive" else (0.0, 0.0)
    res = run_levels(url, model, texts, [c], args.duration, args.warmup, grpc_target)[0]
    after = batch_stats(url, model) if name != "naive" else (0.0, 0.0)
    count = after[1] - before[1]
    row = {"variant": name, **res.as_dict(), "mean_batch": (after[0] - before[0]) / count if count else None,
           "latencies_ms": res.latencies_ms}
    print(f"  {name:>10} c={c:<3} {res.throughput:7.1f} req/s  p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:7.2f} ms  "
          f"errors {res.error_rate:.1%}" + (f"  mean batch {row['mean_batch']:.1f}" if row["mean_batch"] else ""),
          flush=True)
    return row


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--int8", help="ONNX int8 artifact to serve too (default: found in runs/ by parent)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5, help="ABBA rounds; a target is met when most rounds meet it")
    parser.add_argument("--blocks", type=int, default=6, help="batch-1 raw/HTTP/gRPC blocks (40 calls each) per round")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="client counts, comma-separated (1 and 32 are always measured: the targets read them)")
    parser.add_argument("--naive-server", nargs=2, metavar=("ARTIFACT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.levels = tuple(sorted({int(c) for c in args.levels.split(",")} | {1, 32}))  # the targets read these
    return args


def start_servers(variants: dict, model_dir: Path, tmp: Path) -> tuple[list, str, str, str]:
    """`deploylm serve` with every variant (ports chosen by the OS, read from its log) and the naive server."""
    serve_cmd = [str(ROOT / ".venv" / "bin" / "deploylm"), "serve", *map(str, variants.values()),
                 *sum((["--name", n] for n in variants), []), "--port", "0", "--grpc-port", "0"]
    log_re = re.compile(r"http=(http://127\.0\.0\.1:\d+) grpc=(127\.0\.0\.1:\d+)")
    grpc_target = {}

    def deploylm_url(log: str):
        m = log_re.search(log)
        if m:
            grpc_target["t"] = m.group(2)
            return m.group(1), f"{m.group(1)}/v2/health/ready"
        return None

    naive_port = 18000 + os.getpid() % 1000
    naive_url = f"http://127.0.0.1:{naive_port}"
    naive_cmd = [sys.executable, __file__, "--naive-server", str(model_dir), str(naive_port)]
    srv, url = start(serve_cmd, deploylm_url, tmp / "deploylm.log")
    try:
        naive, _ = start(naive_cmd, lambda _: (naive_url, f"{naive_url}/ready"), tmp / "naive.log")
    except BaseException:
        stop(srv)
        raise
    return [srv, naive], url, grpc_target["t"], naive_url


def measure_raw(r: int, key: str, art, url: str, grpc_target: str, texts, args) -> dict:
    predict = raw_predictor(key, art)
    raw = {"round": r, "variant": key, "throughput_b32": raw_throughput(predict, texts, args.duration),
           **interleaved_batch1(predict, url, grpc_target, key, texts, args.blocks)}
    print(f"  {key} raw runner: batch-32 {raw['throughput_b32']:.1f} seq/s, batch-1 p50 "
          f"{raw['raw_p50_ms']:.2f} ms; interleaved batch-1 overhead HTTP {raw['http_overhead_ms']:+.2f} ms, "
          f"gRPC {raw['grpc_overhead_ms']:+.2f} ms", flush=True)
    return raw


def round_plan(r: int, artifacts: dict, url: str, grpc_target: str, naive_url: str, texts, args,
               rows: list, raws: list) -> list:
    """Round r's measurements as callables, in the order of an even round; odd rounds run them backward."""
    plan = []
    for key, art in artifacts.items():
        plan.append(lambda key=key, art=art: raws.append(measure_raw(r, key, art, url, grpc_target, texts, args)))
        for proto, target in (("http", None), ("grpc", grpc_target)):
            plan += [lambda key=key, proto=proto, target=target, c=c: rows.append(
                {"round": r, **run_level(f"{proto}-{key}", url, target, key, texts, c, args)}) for c in args.levels]
    plan += [lambda c=c: rows.append({"round": r, **run_level("naive", naive_url, None, "fp32", texts, c, args)})
             for c in args.levels]
    return plan


def main() -> int:
    args = parse_args()
    if args.naive_server:
        naive_server(args.naive_server[0], int(args.naive_server[1]))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from deploylm import settings

    settings.use_serving_threads()  # the raw runner waits for work the way the server's runner does
    from deploylm.artifacts import Artifact
    from deploylm.machine import machine_info
    from deploylm.serving.loadgen import load_texts

    model_dir, model_note = pick_model(args.model)
    int8_dir = Path(args.int8) if args.int8 else find_int8(model_dir)
    variants = {"fp32": model_dir, **({"int8": int8_dir} if int8_dir else {})}
    artifacts = {key: Artifact.open(path) for key, path in variants.items()}
    texts = load_texts("sst2", "dev")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "deploylm-bench-serve"
    tmp.mkdir(exist_ok=True)
    procs, url, grpc_target, naive_url = start_servers(variants, model_dir, tmp)
    rows, raws = [], []
    machine = {**machine_info(), "loadavg_start": os.getloadavg()}
    try:
        for r in range(args.rounds):
            plan = round_plan(r, artifacts, url, grpc_target, naive_url, texts, args, rows, raws)
            print(f"round {r + 1}/{args.rounds} ({'forward' if r % 2 == 0 else 'backward'} order)", flush=True)
            for step in (plan if r % 2 == 0 else plan[::-1]):
                step()
    finally:
        for proc in procs:
            stop(proc)
    machine["loadavg_end"] = os.getloadavg()
    write_report(rows, raws, args, model_dir, model_note, int8_dir, machine)
    return 0


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def spread(values: list[float]) -> dict:
    """Median over rounds, the extreme rounds, and every round in order."""
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "rounds": []}
    return {"median": float(np.median(vals)), "min": min(vals), "max": max(vals), "rounds": vals}


def summarise(rows, raws) -> tuple[list[dict], dict]:
    """The all-points table (median and extreme rounds per point) and, per served model, every target's
    per-round values: each a ratio or a difference of two measurements taken in the same round."""
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for c in sorted({r["concurrency"] for r in rows if r["variant"] == variant}):
            sel = [r for r in rows if r["variant"] == variant and r["concurrency"] == c]
            table.append({"variant": variant, "concurrency": c,
                          **{k: spread([s[k] for s in sel]) for k in ("throughput", "p50_ms", "p99_ms")},
                          **{k: _median([s[k] for s in sel]) for k in ("p95_ms", "error_rate", "mean_batch")}})

    def at(variant, c, r):
        return next(x for x in rows if x["variant"] == variant and x["concurrency"] == c and x["round"] == r)

    def naive_best(r):
        return max((x for x in rows if x["variant"] == "naive" and x["round"] == r), key=lambda x: x["throughput"])

    ratios = {}
    for key in dict.fromkeys(x["variant"] for x in raws):
        mine = sorted((x for x in raws if x["variant"] == key), key=lambda x: x["round"])
        ratios[key] = {
            **{f"{proto}_c32_over_raw_b32": spread([at(f"{proto}-{key}", 32, x["round"])["throughput"]
                                                    / x["throughput_b32"] for x in mine])
               for proto in ("http", "grpc")},
            **{f"{proto}_c32_over_naive_best": spread([at(f"{proto}-{key}", 32, x["round"])["throughput"]
                                                       / naive_best(x["round"])["throughput"] for x in mine])
               for proto in ("http", "grpc")},
            "naive_best_concurrency": [naive_best(x["round"])["concurrency"] for x in mine],
            **{k: spread([x[k] for x in mine]) for k in ("throughput_b32", "raw_p50_ms", "http_p50_ms", "grpc_p50_ms",
                                                         "http_overhead_ms", "grpc_overhead_ms")},
        }
    return table, ratios


def plot(rows, raws, table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for variant in dict.fromkeys(t["variant"] for t in table):
        pts = [t for t in table if t["variant"] == variant]
        left.plot([t["concurrency"] for t in pts], [t["throughput"]["median"] for t in pts], marker="o", label=variant)
    for key in dict.fromkeys(x["variant"] for x in raws):
        left.axhline(_median([x["throughput_b32"] for x in raws if x["variant"] == key]), ls="--",
                     color="k" if key == "fp32" else "grey", label=f"raw runner {key}, batch 32")
    left.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s (1 text each)",
             title="Throughput (median of rounds)")
    levels = sorted({t["concurrency"] for t in table})
    left.set_xticks(levels, [str(c) for c in levels])
    left.legend(fontsize=7)
    series = {}
    for key in dict.fromkeys(x["variant"] for x in raws):
        series[f"raw runner {key} batch 1"] = [v for x in raws if x["variant"] == key for v in x["latencies_ms"]["raw"]]
        series[f"deploylm HTTP {key} c=1"] = [v for x in raws if x["variant"] == key for v in x["latencies_ms"]["http"]]
    series["naive pipeline c=1"] = [v for r in rows if r["variant"] == "naive" and r["concurrency"] == 1
                                    for v in r["latencies_ms"]]
    hi = max(np.percentile(v, 99) for v in series.values() if v)
    bins = np.linspace(0, hi, 80)
    for label, values in series.items():
        right.hist(values, bins=bins, alpha=0.5, label=f"{label} (p50 {np.median(values):.1f} ms)")
    right.set(xlabel="latency (ms)", ylabel="requests", title="Single-client latency (all rounds)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _load(avg) -> str:
    return "/".join(f"{x:.1f}" for x in avg) if avg else "?"


def _range(s: dict, fmt: str, unit: str = "") -> str:
    """`median [min–max]` over rounds."""
    return f"{s['median']:{fmt}}{unit} [{s['min']:{fmt}}–{s['max']:{fmt}}]"


def _verdict(s: dict, holds) -> str:
    """Met only when the target holds in most rounds, however good the median looks."""
    held, n = sum(1 for v in s["rounds"] if holds(v)), len(s["rounds"])
    return f"{'**met**' if 2 * held > n else '**missed**'} ({held} of {n} rounds)"


def _best_levels(concurrencies: list[int]) -> str:
    counts = {c: concurrencies.count(c) for c in sorted(set(concurrencies))}
    return ", ".join(f"c={c} in {k} round{'s' if k > 1 else ''}" for c, k in counts.items())


def target_lines(ratios: dict) -> list[str]:
    """Same-model comparisons first; the one ratio across precisions (int8 served vs the fp32 naive server)
    last, labelled as such."""
    lines = ["| target | served model | compared with | median [min–max] over rounds | verdict |",
             "|---|---|---|---|---|"]
    cross = []
    for key, r in ratios.items():
        times = lambda name: _range(r[name], ".2f", "×")  # noqa: E731
        ms = lambda name: _range(r[name], "+.2f", " ms")  # noqa: E731
        precision = "" if key == "fp32" else " (**different precisions**: int8 vs fp32)"
        naive = (f"| HTTP throughput at c=32 ≥ 5× the naive FastAPI + pipeline server | {key} | naive server, fp32"
                 f"{precision}, at its best concurrency ({_best_levels(r['naive_best_concurrency'])}) | "
                 f"{times('http_c32_over_naive_best')} | {_verdict(r['http_c32_over_naive_best'], lambda v: v >= 5)} |")
        lines += [
            f"| HTTP throughput at c=32 ≥ 0.85× raw runner batch 32 | {key} | raw runner, same model "
            f"({r['throughput_b32']['median']:.0f} seq/s) | {times('http_c32_over_raw_b32')} | "
            f"{_verdict(r['http_c32_over_raw_b32'], lambda v: v >= 0.85)} |",
            f"| HTTP p50 at c=1 ≤ raw runner batch-1 p50 + 2 ms (interleaved) | {key} | raw runner batch 1, same "
            f"model (raw {r['raw_p50_ms']['median']:.2f} ms, HTTP {r['http_p50_ms']['median']:.2f} ms) | "
            f"{ms('http_overhead_ms')} | {_verdict(r['http_overhead_ms'], lambda v: v <= 2)} |"]
        (lines if key == "fp32" else cross).append(naive)
    lines += cross
    for key, r in ratios.items():
        times = lambda name: _range(r[name], ".2f", "×")  # noqa: E731
        lines.append(f"| (gRPC, no target) c=32 vs raw batch 32; vs naive; batch-1 overhead | {key} | as above | "
                     f"{times('grpc_c32_over_raw_b32')}; {times('grpc_c32_over_naive_best')}; "
                     f"{_range(r['grpc_overhead_ms'], '+.2f', ' ms')} | |")
    return lines


def point_lines(table: list[dict]) -> list[str]:
    lines = ["| variant | clients | req/s | p50 ms | p95 ms | p99 ms | errors | mean batch |",
             "|---|---|---|---|---|---|---|---|"]
    for t in table:
        mb = "" if t["mean_batch"] != t["mean_batch"] else f"{t['mean_batch']:.1f}"
        lines.append(f"| {t['variant']} | {t['concurrency']} | {_range(t['throughput'], '.1f')} | "
                     f"{_range(t['p50_ms'], '.2f')} | {t['p95_ms']:.2f} | {_range(t['p99_ms'], '.2f')} | "
                     f"{t['error_rate']:.1%} | {mb} |")
    return lines


def header_lines(args, model_dir, model_note, int8_dir, machine) -> list[str]:
    cmd = (f"python benchmarks/serve.py --duration {args.duration:g} --rounds {args.rounds} --blocks {args.blocks}"
           + ("" if args.warmup == 2.0 else f" --warmup {args.warmup:g}")
           + ("" if args.levels == LEVELS else f" --levels {','.join(map(str, args.levels))}"))
    saturated = machine.get("loadavg_start", (0,))[0] > (machine.get("cores") or 2)
    return [
        "# Serving", "",
        f"Command: `{cmd}` (one script run; {args.rounds} rounds in ABBA order: every measurement once per round, "
        "the round's sequence run forward, then backward, and so on; "
        f"{args.duration:g} s per load point after {args.warmup:g} s warm-up). Each ratio is taken within one round; "
        "tables give the median over rounds and [the smallest–the largest round]; a target is met only when it "
        "holds in more than half of the rounds.", "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gb')} GB "
        f"({machine.get('platform')}). The load generator runs on the same cores as the servers. Host load average "
        f"(1/5/15 min) at start {_load(machine.get('loadavg_start'))}, at end {_load(machine.get('loadavg_end'))}: "
        "at the start, above the core count means other jobs shared these cores (at the end it also counts this "
        "benchmark's own servers and load generator).", "",
        f"Models, both served by one `deploylm serve`: `fp32` = `{model_dir}` ({model_note}), torch runner"
        + (f"; `int8` = `{int8_dir}`, its gated ONNX dynamic-int8 variant (onnxruntime runner)." if int8_dir else
           "; no ONNX int8 variant of it was found in runs/."), "",
        "Traffic: SST-2 dev sentences (872), one text per request, closed loop (each client waits for its "
        "answer before sending the next). Server: `deploylm serve` defaults (max batch 32, max wait 5 ms, queue 256). "
        "Naive baseline: FastAPI + `transformers.pipeline` on the fp32 model in one uvicorn worker, an async handler "
        "running one forward pass at a time on one thread (why this is its fair form: benchmarks/serve.py's "
        f"docstring), measured at {', '.join(map(str, args.levels))} clients and compared at its best.", "",
        *(["**Not a valid measurement: the host was saturated by other jobs during this run** (load average "
           "above the core count). Re-run on a quiet machine before reading the ratios.", ""] if saturated else []),
    ]


def write_report(rows, raws, args, model_dir, model_note, int8_dir, machine) -> None:
    table, ratios = summarise(rows, raws)
    plot(rows, raws, table, RESULTS / "serve_latency.png")
    (RESULTS / "serve.json").write_text(json.dumps({
        "table": table, "ratios": ratios, "machine": machine, "order": "ABBA (odd rounds backward)",
        "raw": [{k: v for k, v in x.items() if k != "latencies_ms"} for x in raws],
        "rounds": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows]}, indent=2) + "\n")
    lines = [
        *header_lines(args, model_dir, model_note, int8_dir, machine),
        "## Targets", "", *target_lines(ratios), "",
        "Raw runner = `task.predict` in-process (tokenize + runner + decode) on the same texts, in a worker "
        "thread, with the server's thread policy (`settings.use_serving_threads`): batch 32 in arrival order (what "
        "a server can batch) and batch 1. Batch-1 overhead = per round, the median over "
        f"{args.blocks} blocks of (HTTP p50 − raw p50) and (gRPC p50 − raw p50), each block 40 calls "
        "of each on the same texts (5 settling calls not counted), blocks alternating raw → HTTP → gRPC and "
        "gRPC → HTTP → raw.", "",
        "## All points", "",
        "Medians over rounds, [smallest–largest round] for throughput, p50 and p99.", "",
        *point_lines(table),
        "", "![throughput and latency](serve_latency.png)", "",
        "http-KEY/grpc-KEY = deploylm serve over REST `/v1/models/KEY/predict` and OIP gRPC `ModelInfer`; "
        "naive = FastAPI + `transformers.pipeline`, one forward pass per request (defined in "
        "benchmarks/serve.py); mean batch = texts per runner call, from the server's /metrics.", ""]
    (RESULTS / "serve.md").write_text("\n".join(lines))
    print("\n".join(lines[:40]))


if __name__ == "__main__":
    sys.exit(main())
