"""`deploylm serve` and `deploylm bench-serve`, registered into the main Typer app by cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..generation.scheduler import SchedulerConfig
from .batcher import BatchConfig
from .limits import Limits
from .server import ServeConfig


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("bench-serve")(bench_serve)

# Each default is defined once, on the config it belongs to; the flags show it.
_B, _L, _D = BatchConfig, Limits, SchedulerConfig
_S = ServeConfig


def serve(
    artifacts: List[Path] = typer.Argument(..., help="artifact directories to serve"),
    name: Optional[List[str]] = typer.Option(None, "--name", help="NAME or NAME:VERSION per artifact, in order (default: the directory's name, version 1); "
                                     "NAME addresses its highest version"),
    host: str = typer.Option("127.0.0.1", help="interface to bind; anything but loopback wants --api-key-file"),
    port: int = typer.Option(8000, help="HTTP port (0: any free port)"),
    grpc_port: int = typer.Option(8001, help="gRPC port (0: any free port, -1: no gRPC)"),
    api_key_file: Optional[Path] = typer.Option(None, help="file holding the Bearer API key"),
    max_batch_size: int = typer.Option(_B.max_batch_size, min=1),
    max_wait_ms: float = typer.Option(_B.max_wait_ms, min=0, help="longest a request waits for its batch to fill"),
    max_batch_tokens: int = typer.Option(_B.max_batch_tokens, min=1, help="padded tokens per runner call"),
    max_queue: int = typer.Option(_B.max_queue, min=1, help="queued requests per model before 429"),
    timeout_s: float = typer.Option(_S.timeout_s, min=0.001, help="per-request deadline"),
    max_body_bytes: int = typer.Option(_L.max_body_bytes, min=1, help="request body limit (413 beyond)"),
    max_inputs: int = typer.Option(_L.max_inputs, min=1, help="texts per request"),
    max_text_chars: int = typer.Option(_L.max_text_chars, min=1, help="characters per text (400 beyond, unless --truncate)"),
    truncate: bool = typer.Option(False, help="cut over-long texts to the model's max length instead of 400"),
    log_level: str = typer.Option("warning"),
    kv_cache_tokens: int = typer.Option(_D.kv_tokens, min=16, help="decoders: KV cache budget per model, in tokens"),
    max_num_seqs: int = typer.Option(_D.max_num_seqs, min=1, help="decoders: sequences decoded together in one step"),
    max_step_tokens: int = typer.Option(_D.max_step_tokens, min=1, help="decoders: tokens per step (prefill chunks + decodes)"),
    max_waiting: int = typer.Option(_D.max_waiting, min=1, help="decoders: queued sequences per model before 429"),
    prefix_cache: bool = typer.Option(_D.prefix_caching, help="decoders: reuse the KV of shared prompt prefixes"),
    generation_timeout_s: float = typer.Option(_S.generation_timeout_s, min=0.001, help="decoders: per-request deadline"),
) -> None:
    """Serve artifacts over REST (task endpoints, Open Inference Protocol v2, the OpenAI API for decoders) and gRPC.
    Encoders get dynamic batching; decoders continuous batching with token streaming."""
    from .. import settings

    settings.use_serving_threads()  # before any model (and its thread pool) loads
    from .server import read_api_key
    from .server import serve as run

    limits = Limits(max_body_bytes=max_body_bytes, max_inputs=max_inputs, max_text_chars=max_text_chars,
                    truncate=truncate, api_key=read_api_key(api_key_file))
    batch = BatchConfig(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                        max_batch_tokens=max_batch_tokens)
    decoder = SchedulerConfig(kv_tokens=kv_cache_tokens, max_num_seqs=max_num_seqs,
                              max_step_tokens=max(max_step_tokens, max_num_seqs), max_waiting=max_waiting,
                              prefix_caching=prefix_cache)
    run(ServeConfig(artifacts=artifacts, decoder=decoder, generation_timeout_s=generation_timeout_s, names=name or (), host=host, port=port,
                    grpc_port=None if grpc_port < 0 else grpc_port, batch=batch, limits=limits, timeout_s=timeout_s,
                    log_level=log_level))


def bench_serve(
    url: str = typer.Argument(..., help="server base URL, e.g. http://127.0.0.1:8000"),
    model: str = typer.Option(..., help="served model name"),
    data: str = typer.Option(..., help="dataset dir/alias (its dev split) or a text file, one text per line"),
    concurrency: str = typer.Option("1,8,32,64", help="comma-separated concurrency levels"),
    duration: float = typer.Option(30.0, min=0.1, help="seconds measured per level"),
    warmup: float = typer.Option(2.0, min=0, help="seconds per level before measuring"),
    grpc: bool = typer.Option(False, "--grpc", help="use OIP gRPC ModelInfer instead of HTTP"),
    grpc_target: str = typer.Option("", help="host:port of gRPC (default: URL host, port 8001)"),
    api_key_file: Optional[Path] = typer.Option(None),
    output: Optional[Path] = typer.Option(None, help="write the results as JSON here"),
) -> None:
    """Closed-loop load test: throughput, p50/p95/p99 and error rate per concurrency level."""
    from urllib.parse import urlparse

    from rich.console import Console
    from rich.table import Table

    from ..errors import ConfigError
    from .loadgen import load_texts, run_levels
    from .server import read_api_key

    from .loadgen import parse_levels

    levels = parse_levels(concurrency)
    target = grpc_target or (f"{urlparse(url).hostname}:8001" if grpc else None)
    console = Console()
    table = Table("protocol", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                  title=f"bench-serve {model} @ {url}")
    results = run_levels(url, model, load_texts(data), levels, duration, warmup, target if grpc else None,
                         read_api_key(api_key_file) if api_key_file else None,
                         progress=lambda r: console.print(f"  c={r.concurrency}: {r.throughput:.1f} req/s, "
                                                          f"p50 {r.p50_ms:.1f} ms"))
    for r in results:
        table.add_row(r.protocol, str(r.concurrency), f"{r.throughput:.1f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}",
                      f"{r.p99_ms:.2f}", f"{r.error_rate:.2%}")
    console.print(table)
    doc = json.dumps([r.as_dict() for r in results], indent=2)
    if output:
        output.write_text(doc + "\n")
    console.print_json(doc)
