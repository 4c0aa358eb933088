"""Run the server: one process, one event loop, one Engine behind REST (uvicorn) and gRPC (grpc.aio).

Start-up order: bind both ports (liveness answers at once) -> load and warm up each model in a thread ->
readiness turns true. Shutdown (SIGINT/SIGTERM): stop accepting connections, let in-flight requests
finish (uvicorn waits for them, gRPC gets a grace period), then drain the batchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError
from .batcher import BatchConfig
from .limits import Limits
from .engine import DEFAULT_TIMEOUT_S


@dataclass
class ServeConfig:
    artifacts: Sequence[Path]
    names: Sequence[str] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC
    batch: BatchConfig = field(default_factory=BatchConfig)
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = DEFAULT_TIMEOUT_S
    log_level: str = "warning"
    decoder: object = None  # generation.scheduler.SchedulerConfig for decoder artifacts (None: its defaults)
    generation_timeout_s: float = 600.0  # per-request deadline of /v1/completions and /v1/chat/completions


def read_api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"Cannot read --api-key-file {path}: {exc.strerror}.") from None
    if len(key) < 16:
        raise ConfigError(f"The API key in {path} is {len(key)} characters; use at least 16 random characters "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > key.txt`).")
    return key


# How long the server keeps an idle HTTP connection open (uvicorn's default, named so clients can stay below it:
# a client that reuses a connection the server is closing at that moment gets a transport error, not an answer).
KEEP_ALIVE_S = 5
_VERSION = re.compile(r"[A-Za-z0-9_.-]+")


def model_names(cfg: ServeConfig) -> list[tuple[str, str]]:
    """(name, version) per artifact: from --name NAME or NAME:VERSION (version 1 when not given), else the
    artifact directory's name."""
    if cfg.names and len(cfg.names) != len(cfg.artifacts):
        raise ConfigError(f"{len(cfg.names)} --name values for {len(cfg.artifacts)} artifacts: give one per artifact "
                          "(in the same order) or none.")
    named = []
    for given in list(cfg.names) or [Path(a).resolve().name for a in cfg.artifacts]:
        name, _, version = given.partition(":") if cfg.names else (given, "", "")
        version = version or "1"
        if not name or "/" in name or not _VERSION.fullmatch(version):
            raise ConfigError(f"--name {given!r} is not NAME or NAME:VERSION (a version is letters, digits, '.', "
                              "'_' or '-'; a name has no '/').")
        named.append((name, version))
    dupes = sorted({f"{n}:{v}" for n, v in named if named.count((n, v)) > 1})
    if dupes:
        raise ConfigError(f"Several artifacts would be served as {dupes}; tell them apart with --name NAME[:VERSION].")
    return named


def build(cfg: ServeConfig):
    """(FastAPI app, engine, metrics, lifespan hooks) for cfg; nothing bound or loaded yet."""
    from .engine import Engine
    from .http_app import create_app
    from .metrics import ServerMetrics

    metrics = ServerMetrics()
    engine = Engine(cfg.batch, cfg.limits, cfg.timeout_s, metrics)
    return create_app(engine, metrics, cfg.limits, generation_timeout_s=cfg.generation_timeout_s), engine, metrics


async def _load_all(engine, cfg: ServeConfig, names: list[tuple[str, str]],
                    report: Callable[[str], None]) -> list[str]:
    """Load and warm up each model in a thread; return what failed (the server then exits, like Triton)."""
    from .engine import load_model

    engine.loading.update(name for name, _ in names)
    failures = []
    for k, (path, (name, version)) in enumerate(zip(cfg.artifacts, names)):
        try:
            model = await asyncio.to_thread(load_model, path, name, version, cfg.decoder)
            await asyncio.to_thread(engine.add, model)
        except Exception as exc:  # noqa: BLE001 - reported, then the server stops
            failures.append(f"model '{name}:{version}' from {path}: {exc}")
            continue
        if all(n != name for n, _ in names[k + 1:]):  # its last version is in
            engine.loading.discard(name)
        report(f"deploylm: model '{name}' version {version} ready ({model.task.name}, {model.runner.backend}) "
               f"from {path}")
    return failures


def try_line(model, base: str, auth: str) -> str:
    """A curl command that works against `model` as served."""
    json_header = "-H 'Content-Type: application/json'"
    if model.task.embedding_output is not None:
        body = '{"model": "%s", "input": ["A man is playing a guitar."]}' % model.name
        return f"curl -s{auth} {base}/v1/embeddings {json_header} -d '{body}'"
    if not model.is_decoder:
        return (f"curl -s{auth} -X POST {base}/v1/models/{model.name}/predict {json_header} "
                "-d '{\"inputs\": [\"a gripping, beautifully acted film\"]}'")
    from ..tasks.generation import has_chat_template

    if has_chat_template(model.tokenizer):
        body = ('{"model": "%s", "messages": [{"role": "user", "content": "Name three uses of a paperclip."}], '
                '"max_tokens": 64, "stream": true}' % model.name)
        return f"curl -sN{auth} {base}/v1/chat/completions {json_header} -d '{body}'"
    body = '{"model": "%s", "prompt": "The capital of France is", "max_tokens": 32}' % model.name
    return f"curl -s{auth} {base}/v1/completions {json_header} -d '{body}'"


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its own shutdown, which would kill the process before gRPC and
        the batchers drain; we own the signals instead and only ask uvicorn to exit."""

        @contextlib.contextmanager
        def capture_signals(self):
            yield

        def request_exit(self) -> None:
            if self.should_exit:
                self.force_exit = True  # second signal: stop waiting for in-flight requests
            self.should_exit = True

    return Server


async def serve_async(cfg: ServeConfig, report: Callable[[str], None] = print) -> None:
    import uvicorn

    from .grpc_server import create_grpc_server

    _Server = _server_class()

    names = model_names(cfg)
    for path in cfg.artifacts:
        if not Path(path).is_dir():
            raise ConfigError(f"Artifact {path} is not a directory. Pass the directory a deploylm stage wrote.")
    app, engine, metrics = build(cfg)
    grpc_server = None
    if cfg.grpc_port is not None:
        grpc_server, grpc_port = create_grpc_server(engine, metrics, cfg.limits, cfg.host, cfg.grpc_port)
        await grpc_server.start()
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=int(cfg.timeout_s) + 5, lifespan="off")
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if serving.done():  # could not bind: uvicorn has logged why
        await serving
        raise ConfigError(f"Could not start HTTP on {cfg.host}:{cfg.port} (port in use or not allowed).")
    http_port = server.servers[0].sockets[0].getsockname()[1]
    grpc_text = f" grpc={cfg.host}:{grpc_port}" if grpc_server is not None else ""
    report(f"deploylm: listening http=http://{cfg.host}:{http_port}{grpc_text}")
    loader = asyncio.create_task(_load_all(engine, cfg, names, report))

    def _show_curl(task) -> None:  # a line users can paste once every model is ready
        if task.cancelled() or task.result():
            return
        auth = " -H 'Authorization: Bearer $API_KEY'" if cfg.limits.api_key else ""
        base = f"http://{cfg.host}:{http_port}"
        for name in dict.fromkeys(n for n, _ in names):
            report(f"deploylm: try: {try_line(engine.get(name), base, auth)}")

    loader.add_done_callback(_show_curl)
    loader.add_done_callback(lambda t: t.cancelled() or not t.result() or server.request_exit())
    try:
        await serving  # returns after SIGINT/SIGTERM, once in-flight HTTP requests are answered
    finally:
        loader.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace=cfg.timeout_s)
        await asyncio.to_thread(engine.close, True)
        report("deploylm: stopped")
    if loader.done() and not loader.cancelled() and loader.result():
        raise ConfigError("Could not serve: " + "; ".join(loader.result()) + ". Fix or remove these artifacts.")


def serve(cfg: ServeConfig) -> None:
    def report(line: str) -> None:
        print(line, flush=True)

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.limits.api_key is None:
        print(f"deploylm: warning: serving on {cfg.host} without --api-key-file: anyone who reaches this host can "
              "use the models.", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_async(cfg, report))
