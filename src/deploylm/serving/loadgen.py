"""Closed-loop load generator for a running deploylm server (HTTP /v1 predict, or OIP gRPC ModelInfer).

Each of `concurrency` clients sends one text, waits for the answer, sends the next, for `duration_s`;
the first `warmup_s` are not counted. Reports throughput (answered requests/s), latency p50/p95/p99
and the error rate per concurrency level.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError


@dataclass
class LevelResult:
    protocol: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    error_rate: float
    error_statuses: dict
    latencies_ms: list = field(default_factory=list, repr=False)  # successful requests, for plots

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("latencies_ms")
        return out


def load_texts(data: str, split: str = "dev", limit: int | None = None) -> list[str]:
    """Texts from a dataset (dir or alias, via deploylm.data) or a plain text file with one text per line."""
    path = Path(data)
    if path.is_file() and path.suffix in ("", ".txt"):
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        from ..data import load_dataset

        inputs = load_dataset(data).split(split).inputs
        texts = [t if isinstance(t, str) else " ".join(t) for t in inputs]
    if not texts:
        raise ConfigError(f"No texts found in {data}.")
    return texts[:limit] if limit else texts


def _summarise(protocol: str, concurrency: int, latencies: list[float], statuses: list[int],
               seconds: float) -> LevelResult:
    ok = np.array([lat for lat, st in zip(latencies, statuses) if st == 200]) * 1000
    errors = sum(1 for s in statuses if s != 200)
    counts: dict[str, int] = {}
    for s in statuses:
        if s != 200:
            counts[str(s)] = counts.get(str(s), 0) + 1
    pct = (lambda q: float(np.percentile(ok, q))) if len(ok) else (lambda q: float("nan"))
    return LevelResult(protocol, concurrency, len(statuses), errors, seconds, len(ok) / seconds, pct(50), pct(95),
                       pct(99), errors / max(1, len(statuses)), counts, ok.tolist())


async def _closed_loop(send: Callable, texts: Sequence[str], concurrency: int, duration_s: float,
                       warmup_s: float) -> tuple[list[float], list[int], float]:
    start = time.perf_counter()
    count_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    statuses: list[int] = []

    async def client(k: int) -> None:
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            status = await send(texts[i % len(texts)])
            t1 = time.perf_counter()
            if t0 >= count_from:
                latencies.append(t1 - t0)
                statuses.append(status)
            i += concurrency

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return latencies, statuses, time.perf_counter() - count_from


async def _http_level(url: str, model: str, texts, concurrency: int, duration_s: float, warmup_s: float,
                      api_key: str | None) -> LevelResult:
    # aiohttp, not httpx: httpx's async connection pool serialises at high concurrency (measured here: 169 vs
    # 1,168 req/s at 32 clients against the same server), which would measure the client, not the server.
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        path = f"/v1/models/{model}/predict"

        async def send(text: str) -> int:
            try:
                async with session.post(path, json={"inputs": [text]}) as response:
                    await response.read()
                    return response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return 599

        lat, st, secs = await _closed_loop(send, texts, concurrency, duration_s, warmup_s)
    return _summarise("http", concurrency, lat, st, secs)


async def _grpc_level(target: str, model: str, texts, concurrency: int, duration_s: float, warmup_s: float,
                      api_key: str | None) -> LevelResult:
    import grpc

    from . import oip
    from .proto import open_inference_pb2 as pb
    from .proto import open_inference_pb2_grpc as pb_grpc

    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def send(text: str) -> int:
            req = pb.ModelInferRequest(model_name=model, raw_input_contents=[oip.join_bytes_tensor([text.encode()])])
            req.inputs.add(name=oip.INPUT_NAME, datatype="BYTES", shape=[1])
            try:
                await stub.ModelInfer(req, metadata=metadata, timeout=60)
                return 200
            except grpc.aio.AioRpcError as exc:
                return 1000 + exc.code().value[0]  # distinct from HTTP statuses in the report

        lat, st, secs = await _closed_loop(send, texts, concurrency, duration_s, warmup_s)
    return _summarise("grpc", concurrency, lat, st, secs)


def run_levels(url: str, model: str, texts: Sequence[str], levels: Sequence[int], duration_s: float = 30.0,
               warmup_s: float = 2.0, grpc_target: str | None = None, api_key: str | None = None,
               progress: Callable[[LevelResult], None] | None = None) -> list[LevelResult]:
    """One LevelResult per concurrency level (gRPC when grpc_target is given, else HTTP)."""
    if not levels or any(c < 1 for c in levels):
        raise ConfigError(f"Concurrency levels must be positive integers, got {list(levels)}.")
    results = []
    for c in levels:
        if grpc_target:
            res = asyncio.run(_grpc_level(grpc_target, model, texts, c, duration_s, warmup_s, api_key))
        else:
            res = asyncio.run(_http_level(url.rstrip("/"), model, texts, c, duration_s, warmup_s, api_key))
        results.append(res)
        if progress:
            progress(res)
    return results


def parse_levels(concurrency: str) -> list[int]:
    """--concurrency "1,8,32" -> [1, 8, 32] (bench-serve and bench-generate)."""
    from ..errors import ConfigError

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ConfigError(f"--concurrency must be comma-separated positive integers, got '{concurrency}'.")
    return levels
