"""The serving engine: every served model by name, each with its own queue and batcher thread.

Transports (FastAPI, gRPC) only translate wire format into `engine.submit(model, texts)` and back;
validation, limits, batching, deadlines and cancellation live here, so both transports behave alike.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, RequestError
from .batcher import BatchConfig, Batcher, Request
from .limits import Limits
from .status import CLIENT_GONE

DEFAULT_TIMEOUT_S = 10.0  # per-request deadline of the encoder routes (serve --timeout-s)

# Texts totalling more characters than this are tokenized in a worker thread, so that one big request
# does not stall the event loop (small ones are faster inline than a thread hop).
_INLINE_ENCODE_CHARS = 4096


@dataclass
class ServedModel:
    name: str
    task: Any  # deploylm.tasks.Task
    tokenizer: Any
    runner: Any
    labels: list[str]
    max_length: int
    version: str = "1"
    platform: str = ""
    source: str = ""
    batcher: Batcher | None = None
    generator: Any = None  # decoders: a deploylm.generation.engine.DecoderEngine (no batcher)
    ready: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    # Each output's shape per item (-1: the token axis) as the runner answered at load: what the OIP metadata
    # and /v1/embeddings say of sizes only the model knows (an embedding's dimension). Empty if not probed.
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def is_decoder(self) -> bool:
        return self.generator is not None


def version_order(version: str) -> tuple:
    """Latest = highest version: numeric ones by value (2 < 10), any numeric above any other (as Triton)."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def load_model(path: str | Path, name: str | None = None, version: str = "1", decoder=None) -> ServedModel:
    """Open an artifact (checksums verified) and its runner via open_runner; no backend is named here.
    Decoders (task text-generation) get a DecoderEngine built from `decoder` (a SchedulerConfig)."""
    from ..artifacts import Artifact
    from ..evaluation import load_tokenizer
    from ..runtime import open_runner
    from ..tasks import task_for

    art = Artifact.open(path)
    if art.task == GENERATION_TASK:
        return _load_decoder(art, name, version, decoder)
    task, runner, tokenizer = task_for(art), open_runner(art), load_tokenizer(art)
    return ServedModel(name=name or art.name, task=task, tokenizer=tokenizer, runner=runner,
                       labels=art.labels, max_length=art.max_length, version=version,
                       platform=f"deploylm_{runner.backend}", source=str(art.path),
                       output_shapes=probe_output_shapes(task, runner, tokenizer, art.max_length))


def probe_output_shapes(task, runner, tokenizer, max_length: int) -> dict[str, tuple[int, ...]]:
    """The task's warm-up input through the runner: each of the task's outputs' shape per item, -1 for the token axis.
    Neither an ONNX graph nor a torch module states its widths as plainly as one run does."""
    from ..runtime.batching import pad_batch

    feats, _ = task.encode([task.warmup_input], tokenizer, max_length)
    out = runner.run(pad_batch(feats, tokenizer.pad_token_id or 0, runner.input_names))
    return {n: ((-1, *out[n].shape[2:]) if n in task.token_level_outputs else tuple(out[n].shape[1:]))
            for n in task.output_names}


GENERATION_TASK = "text-generation"


def _load_decoder(art, name: str | None, version: str, config) -> ServedModel:
    from transformers import AutoTokenizer

    from ..generation.engine import DecoderEngine
    from ..runtime.decoder_runner import TorchDecoderRunner
    from ..tasks import task_for

    runner = TorchDecoderRunner.from_artifact(art)
    tokenizer = AutoTokenizer.from_pretrained(art.path)
    served = name or art.name
    return ServedModel(name=served, task=task_for(art), tokenizer=tokenizer, runner=runner, labels=[],
                       max_length=runner.max_context, version=version, platform=f"deploylm_{runner.backend}",
                       source=str(art.path), generator=DecoderEngine(runner, tokenizer, config, name=served))


class Engine:
    def __init__(self, batch: BatchConfig | None = None, limits: Limits | None = None, timeout_s: float | None = None,
                 metrics=None):
        self.batch = batch or BatchConfig()
        self.limits = limits or Limits()
        self.timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}  # by key, "NAME:VERSION"
        self._versions: dict[str, list[ServedModel]] = {}  # by name, oldest first: kept by add()
        self.loading: set[str] = set()  # names announced but not loaded yet: 503, not 404
        self._inflight: dict[str, Request] = {}
        self._ids = itertools.count(1)
        self.accepting = True

    # -- lifecycle -------------------------------------------------------------------
    def add(self, model: ServedModel, warmup: bool = True) -> None:
        """Register a loaded model, warm it up, start its batcher; it is ready only after this."""
        if model.key in self.models:
            raise ConfigError(f"Two models are served as '{model.key}'. Give each a distinct --name NAME[:VERSION].")
        # Copy-on-write: add() runs on a loader thread while the event loop iterates these dicts (/metrics,
        # readiness, listings); swapping in new dicts means no reader ever sees one change size under it.
        self.models = {**self.models, model.key: model}
        self._versions = {**self._versions, model.name: sorted([*self._versions.get(model.name, []), model],
                                                               key=lambda m: version_order(m.version))}
        if model.is_decoder:
            if self.metrics is not None and hasattr(self.metrics, "decoder_observer"):
                model.generator.observer = self.metrics.decoder_observer(model.name, model.version)
            model.generator.start()
            if warmup:
                _warm_up_decoder(model.generator)
            model.ready = True
            return
        if warmup:
            self._warm_up(model)
        model.batcher = Batcher(model.key, model.runner, model.task,
                                lambda rows, aux, m=model: m.task.decode_rows(rows, aux, m.id2label),
                                model.tokenizer.pad_token_id or 0, self.batch, self.metrics,
                                labels=(model.name, model.version))
        model.batcher.start()
        model.ready = True

    def _warm_up(self, model: ServedModel) -> None:
        """First calls allocate and pick kernels: pay that before readiness, at batch 1 and at full batch."""
        from ..runtime.batching import pad_batch

        feats, _ = model.task.encode([model.task.warmup_input], model.tokenizer, model.max_length)
        for n in (1, self.batch.max_batch_size):
            model.runner.run(pad_batch(feats * n, model.tokenizer.pad_token_id or 0, model.runner.input_names))

    @property
    def ready(self) -> bool:
        return self.accepting and not self.loading and bool(self.models) and all(m.ready for m in self.models.values())

    def close(self, drain: bool = True) -> None:
        """Stop accepting; with drain, finish every queued request before the batcher threads end."""
        self.accepting = False
        for model in self.models.values():
            model.ready = False
            if model.batcher is not None:
                model.batcher.stop(drain=drain)
            if model.generator is not None:
                model.generator.close()

    # -- requests ------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[ServedModel]:
        """Every served version of `name`, oldest first."""
        return self._versions.get(name, [])

    def metric_labels(self, name: str, version: str | None = None) -> tuple[str, str]:
        """(model, version) labels for a request that asked for name[/version]: empty for unknown ones,
        so that made-up names cannot grow the metrics' label sets."""
        try:
            model = self.get(name, version) if name else None
        except RequestError:
            model = None
        return (model.name, model.version) if model else ("", "")

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """A served model by name (the latest version) or by name and version; "NAME:VERSION" works too."""
        if not version and ":" in name:
            name, version = name.split(":", 1)
        versions = self.versions(name)
        if not versions and name in self.loading:
            raise RequestError(f"Model '{name}' is still loading; retry when /v2/models/{name}/ready is true.", 503)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise RequestError(f"Unknown model '{name}'. Served models: {known}.", 404)
        if not version:
            return versions[-1]
        for model in versions:
            if model.version == version:
                return model
        if name in self.loading:
            raise RequestError(f"Model '{name}' is still loading; retry when /v2/models/{name}/ready is true.", 503)
        raise RequestError(f"Model '{name}' has no version '{version}'; served versions: "
                           f"{', '.join(m.version for m in versions)}.", 404)

    def require_ready(self, name: str, version: str | None = None) -> ServedModel:
        model = self.get(name, version)
        if not self.accepting:
            raise RequestError("The server is shutting down; retry on another replica.", 503)
        if not model.ready or (model.batcher is None and model.generator is None):
            raise RequestError(f"Model '{name}' is still loading; retry when /v2/models/{name}/ready is true.", 503)
        return model

    def require_embedder(self, name: str) -> ServedModel:
        """A ready sentence-embedding model by name (OpenAI's `model`): 404 for unknown names, 400 for others."""
        model = self.require_ready(name)
        if model.task.embedding_output is None:
            found = ", ".join(n for n in self.names() if self.versions(n)[-1].task.embedding_output) or "none"
            where = ("/v1/chat/completions or /v1/completions" if model.is_decoder
                     else f"/v1/models/{model.name}/predict")
            raise RequestError(f"Model '{name}' is a {model.task.name} model, not a sentence-embedding "
                               f"(feature-extraction) model; use {where}. Embedding models served: {found}.", 400)
        return model

    def require_decoder(self, name: str) -> ServedModel:
        """A ready decoder by name (OpenAI's `model`): 404 for unknown names, 400 for an encoder."""
        model = self.require_ready(name)
        if not model.is_decoder:
            decoders = ", ".join(n for n in self.names() if self.versions(n)[-1].is_decoder) or "none"
            raise RequestError(f"Model '{name}' is a {model.task.name} encoder, not a text-generation model; "
                               f"use /v1/models/{model.name}/predict. Generation models served: {decoders}.", 400)
        return model

    async def submit(self, name: str, inputs: Sequence[Any], timeout_s: float | None = None,
                     request_id: str | None = None, gone: asyncio.Future | None = None,
                     version: str | None = None, usage: dict | None = None) -> list:
        """Predictions for `inputs` (the /v1 JSON items: texts, or what the model's task reads), in order, from
        model `name` (its latest version unless `version` says). Raises RequestError with the status to answer.

        `gone`: a future the transport completes when its client disconnects; the request is then
        dropped before it is computed and RequestError(499) is raised.
        `usage`: if given, gets "prompt_tokens", the tokens the model reads (special tokens included)."""
        model = self.require_ready(name, version)
        if model.is_decoder:
            raise RequestError(f"Model '{model.name}' generates text: use /v1/completions or /v1/chat/completions.",
                               400)
        text = self.limits.text_limit(model.max_length)
        items = model.task.inputs_from_json(self.limits.check_items(inputs), text)
        if model.batcher.queue_depth() >= self.batch.max_queue:  # refuse before paying for tokenization
            raise RequestError(f"Model '{model.key}' is overloaded: {self.batch.max_queue} requests already queued "
                               f"(--max-queue). Retry later with backoff.", 429)
        if text.chars > _INLINE_ENCODE_CHARS:
            features, aux = await asyncio.to_thread(model.task.encode, items, model.tokenizer, model.max_length)
        else:
            features, aux = model.task.encode(items, model.tokenizer, model.max_length)
        if usage is not None:
            usage["prompt_tokens"] = sum(len(f["input_ids"]) for f in features)
        loop = asyncio.get_running_loop()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        key = f"req-{next(self._ids)}"  # ours: client-chosen ids need not be unique
        req = Request(features, aux, loop.create_future(), loop, time.monotonic() + timeout, id=request_id or key)
        model.batcher.enqueue(req)
        self._inflight[key] = req
        # Deadline and disconnect cancel the request's future directly (callbacks, not wait_for/wait:
        # those wrap it in extra tasks on every request, measurable at batch-1 latency).
        expired = []
        timer = loop.call_later(timeout, lambda: expired.append(True) or req.future.cancel())
        on_gone = (lambda _: req.future.cancel())
        if gone is not None:
            gone.add_done_callback(on_gone)
        try:
            return await req.future
        except asyncio.CancelledError:
            if expired:
                raise RequestError(f"Request took longer than its {timeout:g} s deadline (--timeout-s).",
                                   504) from None
            if gone is not None and gone.done():
                raise RequestError("Client went away before the answer was ready.", CLIENT_GONE) from None
            raise  # the caller itself was cancelled
        finally:  # a cancelled future is skipped by the batcher, never computed
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(on_gone)
            self._inflight.pop(key, None)

    def abort(self, request_id: str) -> bool:
        """Drop every not-yet-computed request submitted with this id (clients choose ids, so several may share
        one). True if any was still pending."""
        pending = [r for r in list(self._inflight.values()) if r.id == request_id and not r.future.done()]
        return any([r.future.cancel() for r in pending])


def _warm_up_decoder(generator) -> None:
    """A first prefill and a few decode steps allocate and pick kernels before the model is ready."""
    from ..generation.types import GenerationRequest, SamplingParams

    ids = generator.tokenizer("warm-up text for the model").input_ids or [0]
    for _ in generator.iterate(GenerationRequest(generator.new_request_id(), ids,
                                                 SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))):
        pass
