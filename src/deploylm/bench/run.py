"""deploylm bench: measure artifacts side by side, each in a fresh subprocess, in interleaved
rounds (order reversed every round: neighbours on a shared host cause slow phases), record the
figures in each artifact's manifest, and report a table and a throughput-vs-accuracy plot."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..artifacts import Artifact
from ..errors import ConfigError, DeployLMError

MEDIAN_KEYS = ("p50_ms", "p99_ms", "seq_per_s", "gflop_per_s")


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes must be comma-separated integers like 1,32, not '{text}'.") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch-sizes must list positive integers, not '{text}'.")
    return sizes


def parse_seqs(text: str) -> tuple[str, ...]:
    seqs = tuple(s.strip() for s in str(text).split(",") if s.strip())
    for s in seqs:
        if s != "real" and not (s.isdigit() and int(s) > 1):
            raise ConfigError(f"--seq-len takes 'real' (each batch padded to its longest row) and/or a fixed token "
                              f"count like 128, comma-separated; not '{s}'.")
    return seqs or ("real",)


def measure_in_subprocess(path: Path, data: str, batch_sizes, seqs, latency_samples: int,
                          throughput_samples: int, env: dict | None = None, split: str = "dev",
                          metric: bool = True) -> dict:
    """env: extra environment for this measurement (e.g. a peer run with onnxruntime's default fusions).
    metric False: timings only (measure.measure)."""
    with tempfile.TemporaryDirectory(prefix="deploylm-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "deploylm.bench.measure", str(path), "--data", data,
               "--batch-sizes", ",".join(map(str, batch_sizes)), "--seqs", ",".join(seqs),
               "--latency-samples", str(latency_samples), "--throughput-samples", str(throughput_samples),
               "--split", split, "--out", str(out)] + ([] if metric else ["--no-metric"])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise DeployLMError(f"Measuring {path} failed (exit {proc.returncode}): {tail[0]}")
        return json.loads(out.read_text())


def merge_rounds(runs: list[dict]) -> dict:
    """Median of each timing over rounds; the largest peak RSS; accuracy from the first (deterministic).
    `spread` keeps each figure's [min, max] over the rounds: how much the host moved under the median."""
    merged = dict(runs[0])
    merged["rounds"] = len(runs)
    rss = [r["peak_rss_mb"] for r in runs]
    merged["peak_rss_mb"] = max(rss)
    merged["peak_rss_spread_mb"] = [min(rss), max(rss)]
    rows = []
    for i, row in enumerate(runs[0]["results"]):
        per_round = {k: [r["results"][i][k] for r in runs] for k in MEDIAN_KEYS}
        rows.append({**row, **{k: round(statistics.median(v), 3) for k, v in per_round.items()},
                     "spread": {k: [min(v), max(v)] for k, v in per_round.items()}})
    merged["results"] = rows
    return merged


def bench(artifacts: list, data: str, batch_sizes=(1, 32), seqs=("real",), rounds: int = 1,
          latency_samples: int = 200, throughput_samples: int = 512, record: bool = True, progress=None,
          envs: list[dict | None] | None = None, config: dict | None = None, split: str = "dev",
          metric: bool = True) -> list[dict]:
    """envs: per artifact, extra environment for its measuring process (None: as this process has it).
    config: the stage config (optimize/stages.py BenchConfig) recorded beside the figures, so that it can be fed
    back to `deploylm bench --config` to measure again the same way. split: the split whose lengths (and metric)
    are measured; metric False: timings only."""
    arts = [a if isinstance(a, Artifact) else Artifact.open(a) for a in artifacts]
    envs = envs or [None] * len(arts)
    if len(envs) != len(arts):
        raise ConfigError(f"bench got {len(arts)} artifacts but {len(envs)} environments.")
    if not arts:
        raise ConfigError("Give at least one artifact to bench.")
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, not {rounds}.")
    runs: dict[int, list[dict]] = {i: [] for i in range(len(arts))}
    for r in range(rounds):
        order = list(range(len(arts))) if r % 2 == 0 else list(reversed(range(len(arts))))
        for i in order:
            if progress:
                progress(f"round {r + 1}/{rounds}: {arts[i].path}")
            runs[i].append(measure_in_subprocess(arts[i].path, data, batch_sizes, seqs, latency_samples,
                                                 throughput_samples, envs[i], split, metric))
    results = [merge_rounds(runs[i]) for i in range(len(arts))]
    if record:
        from ..machine import machine_info

        for art, res in zip(arts, results):
            entry = {**res, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info()}
            if config is not None:
                entry["config"] = config
            art.update_manifest("bench", f"{Path(data).name}", entry)
    return results
