"""The decoder engine: one model, one step loop on its own thread, any number of callers.

    plan = scheduler.schedule()        # which sequences, how many tokens each, which KV to reserve/copy/free
    logits = runner.step(plan.batch)   # one packed forward
    scheduler.advance(plan)
    tokens = sampler.sample(...)       # per-request sampling inside the shared batch
    -> detokenise, check stops, emit events, finish sequences

Callers (the OpenAI routes, `deploylm generate`, benchmarks) hand in a GenerationRequest and a sink; the loop
pushes GenerationEvents to the sink. Adds and aborts go through an inbox the loop drains before every step, so a
request aborted by its client is gone from the running set at the next step and produces no further tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

import torch

from ..errors import RequestError
from ..runtime.compute import run_on_compute
from .detokenize import IncrementalDetokenizer, StopMatcher
from .sampler import Sampler, SeqSampling
from .scheduler import FINISHED, Scheduler, SchedulerConfig, Seq
from .types import GenerationEvent, GenerationRequest, TokenLogprob

Sink = Callable[[list[GenerationEvent]], None]  # called on the engine thread with one step's events


@dataclass(eq=False)
class _Choice:
    seq: Seq
    sampling: SeqSampling
    detok: IncrementalDetokenizer
    stops: StopMatcher | None
    first_token_at: float | None = None
    last_token_at: float | None = None
    done: bool = False


@dataclass(eq=False)
class _Live:
    request: GenerationRequest
    sink: Sink
    choices: list[_Choice] = field(default_factory=list)


class DecoderEngine:
    def __init__(self, runner, tokenizer, config: SchedulerConfig | None = None, observer=None, name: str = "model"):
        self.runner = runner
        self.tokenizer = tokenizer
        self.name = name
        self.scheduler = Scheduler(config or SchedulerConfig())
        self.sampler = Sampler()
        self.observer = observer  # metrics: see serving.metrics.DecoderObserver; None in tests/CLI
        self.max_context = runner.max_context
        self.vocab_size = runner.vocab_size
        self._grammars = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._live: dict[str, _Live] = {}
        self._ids = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "DecoderEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"decoder-{self.name}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # -- intake (any thread) ---------------------------------------------------------------------------
    def new_request_id(self) -> str:
        return f"gen-{next(self._ids)}"

    def grammar_state(self, response_format: dict | None):
        if not response_format or response_format.get("type", "text") == "text":
            return None
        if self._grammars is None:
            from .structured import GrammarFactory

            self._grammars = GrammarFactory(self.tokenizer, self.vocab_size)
        return self._grammars.state(response_format)

    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        """Queue a request; its events go to `sink` from the engine thread. Raises RequestError (400: can never
        fit, 429: queue full) at once, on the caller's thread."""
        p = request.params
        grammars = [self.grammar_state(p.response_format) for _ in range(p.n)]  # compile errors: 400 here
        seqs = self.scheduler.make_seqs(request.request_id, request.prompt_ids, p.max_tokens, p.n,
                                        in_flight=self._inbox.qsize())
        live = _Live(request, sink)
        for seq, grammar in zip(seqs, grammars):
            stops = StopMatcher(p.stop) if p.stop else None
            live.choices.append(_Choice(seq, SeqSampling(p, request.prompt_ids, self.vocab_size, seq.index, grammar),
                                        IncrementalDetokenizer(self.tokenizer, request.prompt_ids), stops))
        self._inbox.put(("add", live))
        self._wake.set()

    def abort(self, request_id: str) -> None:
        """Stop a request (client gone): its sequences leave the running set at the next step."""
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def stats(self) -> dict:
        return {**self.scheduler.stats(), "steps": self.steps}

    # -- the loop (engine thread) --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._drain_inbox()
            self._expire()
            if not self.scheduler.has_work:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            # The whole step (forward and sampling) on the process's one torch thread: runtime/compute.py.
            run_on_compute(self.step)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self._live[item.request.request_id] = item
                self.scheduler.waiting.extend(c.seq for c in item.choices)
            elif kind == "abort":
                self._end_request(item, "abort")

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, live in list(self._live.items()):
            if live.request.deadline is not None and now > live.request.deadline:
                self._end_request(rid, "timeout")

    def _end_request(self, request_id: str, reason: str) -> None:
        live = self._live.pop(request_id, None)
        if live is None:
            return
        events = []
        for c in live.choices:
            if not c.done:
                c.done = True
                self.scheduler.finish(c.seq)
                events.append(self._event(live, c, finish_reason=reason))
        if events:
            live.sink(events)

    def step(self) -> None:
        """One scheduler decision, one forward, one token for every sequence that samples. Whatever raises in
        the step fails only the requests of this step; the loop keeps serving the others."""
        plan = self.scheduler.schedule()
        self.steps += 1
        try:
            logits = self.runner.step(plan.batch)
        except Exception as exc:  # noqa: BLE001
            self.scheduler.step_failed(plan)
            self._fail_plan(plan, exc)
            return
        self.scheduler.advance(plan)
        try:
            with torch.inference_mode():  # the runner's logits are inference tensors; the sampler edits them
                self._emit(plan, logits)
        except Exception as exc:  # noqa: BLE001 - a sampler/grammar/detokeniser/sink bug: fail, keep serving
            self._fail_plan(plan, exc)
        if self.observer is not None:
            self.observer.on_step(self, len(plan.batch.chunks), plan.batch.num_tokens)

    def _fail_plan(self, plan, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        for rid in {s.request_id for s in plan.seqs}:
            self._fail(rid, self.last_error)

    def _emit(self, plan, logits) -> None:
        sampling = plan.sampling()
        if not sampling:
            return
        by_seq = {}
        for live in self._live.values():
            for c in live.choices:
                by_seq[c.seq.seq_id] = (live, c)
        pairs = [by_seq[s.seq_id] for s in sampling]
        picks = self.sampler.sample(logits, [c.sampling for _, c in pairs])
        now = time.monotonic()
        out: dict[int, tuple[_Live, list]] = {}
        for (live, choice), pick in zip(pairs, picks):
            event = self._accept(live, choice, pick, now)
            if event is not None:
                out.setdefault(id(live), (live, []))[1].append(event)
        for live, events in out.values():
            if all(c.done for c in live.choices):
                self._live.pop(live.request.request_id, None)
            live.sink(events)

    def _accept(self, live: _Live, c: _Choice, pick, now: float) -> GenerationEvent | None:
        """Append the sampled token to its choice; the event to emit (None: nothing new to say yet)."""
        p, seq, token = live.request.params, c.seq, pick.token_id
        self.scheduler.append(seq, token)
        c.sampling.append(token)
        if self.observer is not None:
            self.observer.on_token(self, live.request, c.first_token_at, c.last_token_at, now)
        c.first_token_at = c.first_token_at or now
        c.last_token_at = now
        reason = None
        if token in p.stop_token_ids or (not p.ignore_eos and token in self.runner.eos_token_ids):
            reason, text = "stop", c.detok.flush()
            token_ids, logprobs = [], []
        else:
            text = c.detok.push(token)
            token_ids, logprobs = [token], self._logprobs(pick)
            if len(seq.output_ids) >= seq.max_tokens or seq.num_tokens >= self.max_context:
                reason, text = "length", text + c.detok.flush()
            elif c.sampling.grammar is not None and c.sampling.grammar.terminated:
                reason, text = "stop", text + c.detok.flush()
        if c.stops is not None:
            text, hit = c.stops.feed(text)
            if hit:
                reason = "stop"
            elif reason is not None:
                text += c.stops.flush()
        if reason is not None:
            c.done = True
            self.scheduler.finish(seq)
        elif not text and not logprobs and not token_ids:
            return None
        return self._event(live, c, text=text, token_ids=token_ids, logprobs=logprobs, finish_reason=reason)

    def _logprobs(self, pick) -> list[TokenLogprob]:
        if pick.logprob is None:
            return []
        name = self._token_text
        return [TokenLogprob(pick.token_id, name(pick.token_id), pick.logprob,
                             [(t, name(t), lp) for t, lp in pick.top])]

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _event(self, live: _Live, c: _Choice, **kw) -> GenerationEvent:
        return GenerationEvent(live.request.request_id, c.seq.index, prompt_tokens=len(live.request.prompt_ids),
                               completion_tokens=len(c.seq.output_ids), cached_tokens=c.seq.cached_tokens, **kw)

    def _fail(self, request_id: str, message: str) -> None:
        live = self._live.pop(request_id, None)
        if live is None:
            return
        for c in live.choices:
            c.done = True
            self.scheduler.finish(c.seq)
        live.sink([self._event(live, c, finish_reason="error", error=message) for c in live.choices])

    # -- caller-side helpers ---------------------------------------------------------------------------
    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Events of one request as an async iterator. Leaving the iteration early (client gone, task cancelled)
        aborts the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        self.submit(request, lambda evs: loop.call_soon_threadsafe(events.put_nowait, evs))
        remaining = request.params.n
        try:
            while remaining:
                for ev in await events.get():
                    remaining -= ev.finish_reason is not None
                    yield ev
        finally:
            if remaining:
                self.abort(request.request_id)

    def iterate(self, request: GenerationRequest) -> Iterator[GenerationEvent]:
        """The same as `stream`, for synchronous callers (CLI, benchmarks)."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        self.submit(request, events.put)
        remaining = request.params.n
        try:
            while remaining:
                for ev in events.get():
                    remaining -= ev.finish_reason is not None
                    yield ev
        finally:
            if remaining:
                self.abort(request.request_id)
