"""Offline measurement of one artifact: batch-1 latency (p50/p99), batch-N throughput with
length-aware batching on real lengths and at a fixed width, file size, peak RSS, task metric.

Each artifact is measured in a fresh subprocess (`python -m deploylm.bench.measure`), so peak RSS is
that variant's alone and one variant's allocator/thread-pool state cannot colour the next."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".safetensors", ".bin", ".data")


def model_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def encoder_flops(config: dict, seq_len: int, first_token_last_layer: bool = False) -> float:
    """Multiply-adds x2 of a BERT-shaped encoder on one sequence of seq_len tokens: the linear layers
    (QKV + output + 2 FFN) and the two attention products. (MiniLM-L6 at 128: 2.87 GFLOP.)
    first_token_last_layer: the work actually done when the last layer runs for the first token only
    (its keys and values still for every token; optimize/first_token.py)."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]

    def layer(queries: int) -> float:
        return 2 * (2 * seq_len * h * h + queries * (2 * h * h + 2 * h * inter)) + 4 * queries * seq_len * h

    return (layers - 1) * layer(seq_len) + layer(1 if first_token_last_layer else seq_len)


def peak_rss_mb() -> float:
    """High-water RSS of this process. /proc VmHWM belongs to the address space, so it starts afresh at
    exec; getrusage's ru_maxrss would carry the (large) RSS of the parent that spawned us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # pragma: no cover - non-Linux
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _pad_to(batch: dict, width: int, pad_id: int) -> dict:
    out = {}
    for k, v in batch.items():
        fill = pad_id if k == "input_ids" else 0
        arr = np.full((v.shape[0], width), fill, dtype=np.int64)
        arr[:, : v.shape[1]] = v[:, :width]
        out[k] = arr
    return out


def make_batches(feats, batch_size: int, seq: str, pad_id: int, names) -> list[dict]:
    """seq 'real': length-sorted batches padded to their own longest row; seq '128': every row at 128."""
    from ..runtime.batching import length_batches, pad_batch

    if seq == "real":
        return [pad_batch([feats[i] for i in idx], pad_id, names) for idx in length_batches(feats, batch_size)]
    width = int(seq)
    chunks = [list(range(i, min(i + batch_size, len(feats)))) for i in range(0, len(feats), batch_size)]
    return [_pad_to(pad_batch([feats[i] for i in idx], pad_id, names), width, pad_id) for idx in chunks]


def time_batches(runner, batches) -> list[float]:
    runner.run(batches[0])  # warm-up: first-call allocations, kernel selection
    times = []
    for b in batches:
        t0 = time.perf_counter()
        runner.run(b)
        times.append(time.perf_counter() - t0)
    return times


def measure(path: str, data: str, batch_sizes=(1, 32), seqs=("real", "128"), split: str = "dev",
            latency_samples: int = 200, throughput_samples: int = 512, metric: bool = True) -> dict:
    """metric False: timings only ("metric" is None), for a caller that has the metric already (deploylm report
    reads the recorded one) and would only pay for a whole dev-set pass each round."""
    from ..artifacts import Artifact
    from ..data import load_dataset
    from ..evaluation import evaluate_runner, load_tokenizer
    from ..optimize.first_token import FIRST_TOKEN, recorded_rewrites
    from ..runtime import open_runner
    from ..tasks import task_for

    art = Artifact.open(path)
    t0 = time.perf_counter()
    runner = open_runner(art)
    load_s = time.perf_counter() - t0
    tok, task = load_tokenizer(art), task_for(art)
    examples = load_dataset(data).split(split)
    score = (evaluate_runner(task, runner, tok, examples, art.labels, art.max_length, 32, show_progress=False)
             if metric else None)
    feats, _ = task.encode(examples.inputs, tok, art.max_length)
    config = json.loads((art.path / "config.json").read_text())
    first_token = FIRST_TOKEN in recorded_rewrites(art)
    pad = tok.pad_token_id or 0
    rows = []
    for seq in seqs:
        for bs in batch_sizes:
            subset = feats[: latency_samples if bs == 1 else throughput_samples]
            batches = make_batches(subset, bs, seq, pad, runner.input_names)
            times = time_batches(runner, batches)
            n_seq = sum(len(b["input_ids"]) for b in batches)
            flops = sum(len(b["input_ids"]) * encoder_flops(config, b["input_ids"].shape[1], first_token) for b in batches)
            rows.append({"seq": seq, "batch_size": bs, "sequences": n_seq,
                         "p50_ms": round(1e3 * statistics.median(times), 3),
                         "p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
                         "seq_per_s": round(n_seq / sum(times), 2),
                         "gflop_per_s": round(flops / sum(times) / 1e9, 2),
                         "mean_padded_len": round(float(np.mean([b["input_ids"].shape[1] for b in batches])), 1)})
    return {"artifact": str(art.path), "backend": runner.backend, "format": art.format,
            "method": art.manifest.get("method") or art.stage, "split": split,
            "metric": {**score, "samples": len(examples)} if score is not None else None,
            "file_mb": round(model_bytes(art.path) / 2**20, 2), "load_s": round(load_s, 3), "results": rows,
            "peak_rss_mb": peak_rss_mb(),
            "threads": getattr(runner, "threads", None)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="measure one artifact (run by deploylm bench in a subprocess)")
    ap.add_argument("artifact")
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--seqs", default="real,128")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--throughput-samples", type=int, default=512)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--no-metric", action="store_true", help="timings only: skip the dev-set metric")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = measure(a.artifact, a.data, tuple(int(x) for x in a.batch_sizes.split(",")), tuple(a.seqs.split(",")),
                  split=a.split, latency_samples=a.latency_samples, throughput_samples=a.throughput_samples,
                  metric=not a.no_metric)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
