"""Generation load: TTFT, inter-token latency, per-stream and aggregate decode tokens/s at a concurrency, either
in-process against a DecoderEngine or over HTTP with the official `openai` client against a running server.

Each level is one closed loop: `concurrency` streams, each sending its next prompt as soon as its previous one ends,
until `requests` have been sent. Every request is greedy with a fixed number of new tokens (EOS ignored), so every
system does the same work.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Trace:
    sent: float
    token_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None
    prompt_index: int = 0
    token_ids: list[int] = field(default_factory=list)


@dataclass
class LevelResult:
    system: str
    concurrency: int
    requests: int
    wall_s: float
    generated_tokens: int
    aggregate_tok_s: float
    per_stream_tok_s: float  # median over requests of (tokens after the first) / (last - first token time)
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    errors: int
    peak_rss_mb: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_peer(cls, system: str, concurrency: int, doc: dict) -> "LevelResult":
        """A peer's document (bench.generate_peers.run_peer) in the same shape."""
        s = doc["summary"]
        nan = float("nan")
        agg = s.get("aggregate_tokens_per_s") or nan
        return cls(system, concurrency, s["requests"], nan, int(s["requests"] * (s.get("output_tokens_mean") or 0)),
                   agg, s.get("decode_tokens_per_s") or nan, s.get("ttft_p50_ms") or nan, s.get("ttft_p99_ms") or nan,
                   s.get("itl_p50_ms") or nan, s.get("itl_p99_ms") or nan, 0, s.get("peak_rss_mb"),
                   {"aggregate_min": s.get("aggregate_tokens_per_s_min"),
                    "aggregate_max": s.get("aggregate_tokens_per_s_max"),
                    "weight_read_gbps": s.get("weight_read_gbps")})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def summarise(system: str, concurrency: int, traces: list[Trace], wall_s: float) -> LevelResult:
    ok = [t for t in traces if t.error is None and t.token_times]
    ttft = [(t.token_times[0] - t.sent) * 1e3 for t in ok]
    gaps = [(b - a) * 1e3 for t in ok for a, b in zip(t.token_times, t.token_times[1:])]
    rates = [(len(t.token_times) - 1) / (t.token_times[-1] - t.token_times[0]) for t in ok
             if len(t.token_times) > 1 and t.token_times[-1] > t.token_times[0]]
    generated = sum(len(t.token_times) for t in ok)
    return LevelResult(system, concurrency, len(traces), wall_s, generated, generated / wall_s if wall_s else 0.0,
                       statistics.median(rates) if rates else float("nan"), _pct(ttft, .5), _pct(ttft, .99),
                       _pct(gaps, .5), _pct(gaps, .99), len(traces) - len(ok))


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- in process ---------------------------------------------------------------------------------------

def run_engine_level(engine, prompts: list[list[int]], max_tokens: int, concurrency: int, requests: int,
                     system: str = "deploylm") -> LevelResult:
    """Closed loop straight into the engine: no HTTP, no event loop (token times taken on the engine thread)."""
    from ..generation.types import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    traces: list[Trace] = []
    lock, all_done = threading.Lock(), threading.Event()
    counts = {"sent": 0, "done": 0}

    def send() -> None:
        with lock:
            if counts["sent"] >= requests:
                return
            k = counts["sent"]
            counts["sent"] += 1
        trace = Trace(time.perf_counter(), prompt_tokens=len(prompts[k % len(prompts)]), prompt_index=k % len(prompts))
        traces.append(trace)

        def sink(events, trace=trace) -> None:  # on the engine thread
            now = time.perf_counter()
            for ev in events:
                trace.token_times.extend([now] * len(ev.token_ids))
                trace.token_ids.extend(ev.token_ids)
                if ev.finish_reason is not None:
                    trace.error = ev.error
                    counts["done"] += 1
                    if counts["done"] >= requests:
                        all_done.set()
                    send()

        engine.submit(GenerationRequest(engine.new_request_id(), prompts[k % len(prompts)], params), sink)

    start = time.perf_counter()
    for _ in range(min(concurrency, requests)):
        send()
    all_done.wait()
    wall = time.perf_counter() - start
    result = summarise(system, concurrency, traces, wall)
    result.peak_rss_mb = peak_rss_mb()
    result.extra = {**engine.stats(), "tokens": {t.prompt_index: t.token_ids for t in traces}}
    return result


# -- over HTTP ------------------------------------------------------------------------------------------

async def _http_level(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int,
                      requests: int, api_key: str | None) -> tuple[list[Trace], float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or "none", max_retries=0,
                         timeout=600)
    traces: list[Trace] = []
    counter = iter(range(requests))

    async def stream_worker() -> None:
        for k in counter:
            trace = Trace(time.perf_counter())
            traces.append(trace)
            try:
                stream = await client.completions.create(
                    model=model, prompt=prompts[k % len(prompts)], max_tokens=max_tokens, temperature=0, stream=True,
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].text:
                        trace.token_times.append(time.perf_counter())
                    if chunk.usage is not None:
                        trace.prompt_tokens = chunk.usage.prompt_tokens
            except Exception as exc:  # noqa: BLE001 - counted as an error of the level
                trace.error = f"{type(exc).__name__}: {exc}"

    start = time.perf_counter()
    await asyncio.gather(*(stream_worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await client.close()
    return traces, wall


def run_http_level(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int,
                   requests: int, api_key: str | None = None, system: str = "deploylm-http") -> LevelResult:
    """Closed loop over HTTP, streaming /v1/completions with the `openai` client. Token times are the arrival of
    each streamed chunk with text (the server sends one per token; a chunk whose text the detokeniser held back
    arrives with the next one, so a level's token count can be a little under requests x max_tokens)."""
    traces, wall = asyncio.run(_http_level(base_url, model, prompts, max_tokens, concurrency, requests, api_key))
    return summarise(system, concurrency, traces, wall)
