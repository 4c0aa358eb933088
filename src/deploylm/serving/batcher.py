"""Dynamic batching for one model: a bounded queue, a batcher thread, the runner.

Requests (already tokenized) wait in a FIFO queue. The batcher thread takes items (one item = one text)
until the batch is full (max_batch_size items or max_batch_tokens padded tokens) or the oldest request
has waited max_wait_ms, then runs the runner and hands each result back to its request's asyncio future.

Why a thread and not an asyncio task: the runner is synchronous numpy/torch that releases the GIL;
a dedicated thread keeps the event loop free to parse and answer requests while a batch runs.

Waiting policy (why not always wait max_wait_ms): at concurrency 1 a fixed wait adds max_wait_ms to
every request for nothing. The batcher waits only for as many requests as the previous batch held
(the concurrency it has just seen), never longer than max_wait_ms; a lone client is served at once,
and under load batches fill up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import RequestError
from ..runtime.batching import length_batches, pad_batch
from .memory import HeapTrimmer


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256  # requests waiting (not yet computed); beyond -> 429 at once
    max_batch_tokens: int = 8192  # padded tokens per runner call: long texts make smaller batches


@dataclass(eq=False)
class Request:
    features: list[dict]
    aux: list[Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic() seconds
    id: str = ""
    arrival: float = field(default_factory=time.monotonic)
    taken: int = 0  # items handed to a batch so far
    results: list = field(default_factory=list)
    remaining: int = 0
    failed: bool = False

    def __post_init__(self) -> None:
        self.results = [None] * len(self.features)
        self.remaining = len(self.features)

    def gone(self) -> bool:
        return self.future.cancelled() or self.failed

    def resolve(self) -> None:
        self.loop.call_soon_threadsafe(_set_result, self.future, self.results)

    def fail(self, error: Exception) -> None:
        self.failed = True
        self.loop.call_soon_threadsafe(_set_exception, self.future, error)


def _set_result(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, error: Exception) -> None:
    if not fut.done():
        fut.set_exception(error)


class Batcher:
    """Queue + batcher thread for one model, run for one task (deploylm.tasks.Task): each feature's named
    outputs are cut out by task.output_rows, and `fold(rows, aux) -> predictions` (task.decode_rows) turns a
    request's rows into its predictions; both run in the thread."""

    def __init__(self, name: str, runner, task, fold: Callable[[list, list], list], pad_id: int, config: BatchConfig,
                 metrics=None, labels: tuple[str, ...] | None = None, trimmer: HeapTrimmer | None = None):
        self.name, self.runner, self.task, self.fold = name, runner, task, fold
        self.pad_id, self.config = pad_id, config
        self.trimmer = trimmer or HeapTrimmer()  # batch shapes vary: see serving/memory.py
        self.metrics = metrics
        self.labels = labels or (name, "1")  # (model, version) for the metrics
        self._queue: deque[Request] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._recent_batch = 1
        self._thread: threading.Thread | None = None
        self.batches_run = 0

    # -- called from the event loop ------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
        self._thread.start()

    def enqueue(self, req: Request) -> None:
        with self._cond:
            if self._stopping:
                raise RequestError(f"Model '{self.name}' is shutting down; retry on another replica.", 503)
            if len(self._queue) >= self.config.max_queue:
                raise RequestError(
                    f"Model '{self.name}' is overloaded: {len(self._queue)} requests already queued "
                    f"(--max-queue {self.config.max_queue}). Retry later with backoff.", 429)
            self._queue.append(req)
            self._queued_items += len(req.features)
            self._cond.notify()
        self._report_depth()

    def queue_depth(self) -> int:
        return len(self._queue)

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop taking requests; with drain, finish what is queued first."""
        with self._cond:
            self._stopping = True
            if not drain:
                for req in self._queue:
                    req.fail(RequestError(f"Model '{self.name}' shut down before this request ran.", 503))
                self._queue.clear()
                self._queued_items = 0
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the batcher thread ----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            items = self._next_batch()
            if items is None:
                return
            if items:
                self._execute(items)
                self.trimmer.after_batch()  # its answers are on their way: the trim delays only the next batch

    def _next_batch(self) -> list[tuple[Request, int]] | None:
        cfg = self.config
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None  # stopping and drained
            target = min(cfg.max_batch_size, self._recent_batch)
            deadline = self._queue[0].arrival + cfg.max_wait_ms / 1000
            while self._queued_items < target and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            items = self._take(cfg.max_batch_size)
        self._report_depth()
        if items:
            self._recent_batch = len(items)
        return items

    def _take(self, limit: int) -> list[tuple[Request, int]]:
        """Pop up to `limit` items in FIFO order, dropping requests whose client left or whose deadline passed."""
        items: list[tuple[Request, int]] = []
        now = time.monotonic()
        while self._queue and len(items) < limit:
            req = self._queue[0]
            if req.gone() or now > req.deadline:
                self._queue.popleft()
                self._queued_items -= len(req.features) - req.taken
                self._drop(req, now)
                continue
            n = min(limit - len(items), len(req.features) - req.taken)
            items.extend((req, req.taken + k) for k in range(n))
            req.taken += n
            self._queued_items -= n
            if req.taken == len(req.features):
                self._queue.popleft()
        return items

    def _drop(self, req: Request, now: float) -> None:
        if req.future.cancelled():
            reason = "cancelled"
        elif req.failed:
            return
        else:
            reason = "deadline"
            req.fail(RequestError(f"Request waited past its deadline in the queue of model '{self.name}'.", 504))
        if self.metrics is not None:
            self.metrics.dropped.labels(*self.labels, reason).inc()

    def _execute(self, items: list[tuple[Request, int]]) -> None:
        feats = [req.features[i] for req, i in items]
        for idx in length_batches(feats, self.config.max_batch_size, self.config.max_batch_tokens):
            part = [items[j] for j in idx if not items[j][0].gone()]
            if part:
                self._run_part(part)

    def _run_part(self, part: list[tuple[Request, int]]) -> None:
        feats = [req.features[i] for req, i in part]
        try:
            outputs = self.runner.run(pad_batch(feats, self.pad_id, self.runner.input_names))
            self.batches_run += 1
            if self.metrics is not None:
                self.metrics.batch_size.labels(*self.labels).observe(len(part))
            for row, (req, i) in enumerate(part):
                n = len(req.features[i]["input_ids"])
                req.results[i] = self.task.output_rows(outputs, row, n)
        except Exception as exc:  # noqa: BLE001 - a failing batch must not stop the model's thread
            error = RequestError(f"Model '{self.name}' failed on this batch ({type(exc).__name__}: {exc}).", 500)
            for req in {req for req, _ in part}:
                if not req.gone():
                    req.fail(error)
            return
        for req, _ in part:
            req.remaining -= 1
            if req.remaining == 0 and not req.gone():
                self._finish(req)

    def _finish(self, req: Request) -> None:
        try:
            req.results = self.fold(req.results, req.aux)
        except Exception as exc:  # noqa: BLE001 - as a failing batch: answer 500, keep the thread
            req.fail(RequestError(f"Model '{self.name}' failed to decode its outputs ({type(exc).__name__}: {exc}).",
                                  500))
            return
        req.resolve()

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(*self.labels).set(len(self._queue))
