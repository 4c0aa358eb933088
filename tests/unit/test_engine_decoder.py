"""DecoderEngine's step loop on its own thread, over the fake runner and the tiny tokenizer. Expected tokens come
from `reference` (the fake model run alone, greedy); ordering between the test thread and the engine thread is
made with threading.Event inside the runner's `on_step` hook, never with sleeps."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from fake_decoder_runner import EOS, TRIGGER, FakeRunner, reference
from tiny_decoders import tiny_tokenizer

from deploylm.generation.engine import DecoderEngine
from deploylm.generation.scheduler import SchedulerConfig
from deploylm.generation.types import GenerationRequest, SamplingParams

WAIT = 20  # seconds: only reached when something hangs


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


class Events:
    """A sink collecting every request's events; `wait(rid)` returns once its last choice finished."""

    def __init__(self):
        self.by_id: dict[str, list] = {}
        self.done: dict[str, threading.Event] = {}

    def expect(self, rid: str) -> None:
        self.by_id[rid], self.done[rid] = [], threading.Event()

    def __call__(self, events) -> None:
        for ev in events:
            self.by_id[ev.request_id].append(ev)
            if ev.finish_reason is not None:
                self.done[ev.request_id].set()

    def wait(self, *rids: str) -> None:
        for rid in rids:
            assert self.done[rid].wait(WAIT), f"{rid} never finished"

    def tokens(self, rid: str) -> list[int]:
        return [t for ev in self.by_id[rid] for t in ev.token_ids]

    def reason(self, rid: str) -> str:
        finished = [ev.finish_reason for ev in self.by_id[rid] if ev.finish_reason]
        assert len(finished) == 1 and self.by_id[rid][-1].finish_reason, self.by_id[rid]
        return finished[0]


@contextlib.contextmanager
def engine_with(tok, runner: FakeRunner | None = None, **cfg):
    cfg = {"kv_tokens": 4096, "block_size": 4, "max_num_seqs": 8, "max_step_tokens": 64, **cfg}
    runner = runner or FakeRunner(kv_budget=cfg["kv_tokens"])
    engine = DecoderEngine(runner, tok, SchedulerConfig(**cfg))
    try:
        yield engine, runner, Events()
    finally:
        engine.close()
    assert runner.violations == []


def submit(engine, events: Events, rid: str, prompt_ids: list[int], **params) -> GenerationRequest:
    params.setdefault("temperature", 0.0)
    deadline = params.pop("deadline", None)
    request = GenerationRequest(rid, list(prompt_ids), SamplingParams(**params), arrival=time.monotonic(),
                                deadline=deadline)
    events.expect(rid)
    engine.submit(request, events)
    return request


def prompt(n: int, start: int = 10) -> list[int]:
    return [4 + (start + 11 * i) % 290 for i in range(n)]


def seq_of(runner: FakeRunner, prompt_ids: list[int]) -> int:
    """The seq id whose first chunk started with this prompt."""
    for batch in runner.batches:
        for c in batch.chunks:
            if c.start_pos == 0 and c.token_ids == prompt_ids[:len(c.token_ids)]:
                return c.seq_id
    raise AssertionError("prompt never computed")


LENGTHS = [(3, 12), (17, 5), (5, 20), (30, 8), (9, 3), (1, 15), (12, 10), (25, 6)]  # (prompt, max_tokens)


def test_concurrent_requests_get_exactly_their_tokens_alone(tok):
    # A small step budget, few slots and a tight KV budget: prefill chunking, queueing and preemption all happen.
    prompts = [prompt(n, start=37 * i) for i, (n, _) in enumerate(LENGTHS)]
    with engine_with(tok, max_step_tokens=16, max_num_seqs=4, kv_tokens=48) as (engine, runner, events):
        for i, (p, (_, m)) in enumerate(zip(prompts, LENGTHS)):
            submit(engine, events, f"r{i}", p, max_tokens=m)
        engine.start()  # everything queued before the first step: they share batches
        events.wait(*events.by_id)
        batched = {rid: events.tokens(rid) for rid in events.by_id}
        assert max(len(b.chunks) for b in runner.batches) > 1 and engine.scheduler.preemptions > 0
        for i, (p, (_, m)) in enumerate(zip(prompts, LENGTHS)):
            submit(engine, events, f"alone{i}", p, max_tokens=m)
            events.wait(f"alone{i}")
    for i, (p, (_, m)) in enumerate(zip(prompts, LENGTHS)):
        assert batched[f"r{i}"] == events.tokens(f"alone{i}") == reference(p, m)
        assert events.reason(f"r{i}") == "length" and events.by_id[f"r{i}"][-1].completion_tokens == m


def test_abort_of_a_running_request_stops_it_at_the_next_step(tok):
    reached, release = threading.Event(), threading.Event()
    running_at: dict[int, list[str]] = {}

    def hook(runner, batch):
        n = len(runner.batches)
        running_at[n] = [s.request_id for s in engine.scheduler.running]
        if n == 4:  # the 4th step of "t": let the test thread abort it meanwhile
            reached.set()
            assert release.wait(WAIT)

    with engine_with(tok) as (engine, runner, events):
        runner.on_step = hook
        submit(engine, events, "t", prompt(4), max_tokens=100)
        submit(engine, events, "k", prompt(6, start=80), max_tokens=12)
        engine.start()
        assert reached.wait(WAIT)
        engine.abort("t")
        release.set()
        events.wait("t", "k")
    t_seq = seq_of(runner, prompt(4))
    assert [i for i, _ in runner.chunks_of(t_seq)] == [1, 2, 3, 4]
    assert t_seq in runner.batches[4].free  # step 5 frees its KV first thing
    assert "t" not in running_at[5] and "k" in running_at[5]
    assert events.reason("t") == "abort"  # and it is the last event: nothing came after it
    assert events.tokens("t") == reference(prompt(4), 4)  # steps 1-4 each gave it one token
    assert events.tokens("k") == reference(prompt(6, start=80), 12) and events.reason("k") == "length"


def test_aborted_queued_request_never_runs(tok):
    def hook(runner, batch):
        if len(runner.batches) == 1:
            engine.abort("q")

    with engine_with(tok, max_num_seqs=1) as (engine, runner, events):
        runner.on_step = hook
        submit(engine, events, "a", prompt(5), max_tokens=6)
        submit(engine, events, "q", prompt(7, start=150), max_tokens=6)
        engine.start()
        events.wait("a", "q")
    assert events.reason("q") == "abort" and events.tokens("q") == []
    assert all(c.token_ids != prompt(7, start=150) for b in runner.batches for c in b.chunks)
    assert events.tokens("a") == reference(prompt(5), 6)


def test_deadline_passed_gives_timeout(tok):
    def hook(runner, batch):
        if len(runner.batches) == 3:  # "late" has had 2 tokens; its deadline passes now
            late.deadline = time.monotonic() - 1.0

    with engine_with(tok) as (engine, runner, events):
        runner.on_step = hook
        submit(engine, events, "expired", prompt(5, start=200), max_tokens=5, deadline=time.monotonic() - 1.0)
        late = submit(engine, events, "late", prompt(5), max_tokens=50)
        submit(engine, events, "ok", prompt(6, start=60), max_tokens=8)
        engine.start()
        events.wait("expired", "late", "ok")
    assert events.reason("expired") == "timeout" and events.tokens("expired") == []
    assert all(c.token_ids != prompt(5, start=200) for b in runner.batches for c in b.chunks)
    assert events.reason("late") == "timeout" and events.tokens("late") == reference(prompt(5), 3)
    assert seq_of(runner, prompt(5)) in runner.batches[3].free
    assert events.tokens("ok") == reference(prompt(6, start=60), 8) and events.reason("ok") == "length"


def test_runner_error_fails_that_steps_requests_and_the_engine_keeps_serving(tok):
    shared = prompt(10, start=3)  # two full blocks: the failing step also planned a prefix-cache snapshot

    def hook(runner, batch):
        if len(runner.batches) == 1:
            raise RuntimeError("boom")

    with engine_with(tok) as (engine, runner, events):
        runner.on_step = hook
        submit(engine, events, "x", shared, max_tokens=5)
        submit(engine, events, "y", prompt(6, start=90), max_tokens=5)
        engine.start()
        events.wait("x", "y")
        assert events.reason("x") == events.reason("y") == "error"
        assert "boom" in events.by_id["x"][-1].error and "boom" in engine.last_error
        submit(engine, events, "retry", shared, max_tokens=5)  # the same prompt: must not reuse unwritten KV
        events.wait("retry")
    assert events.reason("retry") == "length" and events.tokens("retry") == reference(shared, 5)


def test_eos_and_stop_token_ids_stop_and_max_tokens_gives_length(tok):
    eos_prompt = prompt(5) + [TRIGGER]  # the fake model answers 3 tokens then EOS
    plain = prompt(6, start=120)
    ref = reference(plain, 6)
    assert ref[2] not in ref[:2]
    with engine_with(tok) as (engine, runner, events):
        submit(engine, events, "eos", eos_prompt, max_tokens=10)
        submit(engine, events, "ignore", eos_prompt, max_tokens=6, ignore_eos=True)
        submit(engine, events, "stop_id", plain, max_tokens=6, stop_token_ids=[ref[2]])
        submit(engine, events, "length", plain, max_tokens=6)
        engine.start()
        events.wait(*events.by_id)
    eos_ref = reference(eos_prompt, 10)
    assert eos_ref[3] == EOS
    assert events.reason("eos") == "stop" and events.tokens("eos") == eos_ref[:3]
    assert events.by_id["eos"][-1].completion_tokens == 4  # the EOS counts, but is not emitted
    assert events.reason("ignore") == "length" and events.tokens("ignore")[3] == EOS
    assert events.reason("stop_id") == "stop" and events.tokens("stop_id") == ref[:2]
    assert events.reason("length") == "length" and events.tokens("length") == ref


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(tok):
    target = prompt(7, start=44)
    seeded = dict(temperature=1.0, seed=7, max_tokens=12)
    others = [dict(temperature=1.0, max_tokens=9), dict(temperature=0.0, max_tokens=14),
              dict(temperature=0.7, seed=3, max_tokens=5, top_p=0.9), dict(temperature=1.0, seed=7, max_tokens=8)]
    with engine_with(tok) as (engine, _, alone):
        engine.start()
        submit(engine, alone, "alone", target, **seeded)
        alone.wait("alone")
    with engine_with(tok, max_step_tokens=16) as (engine, runner, events):
        for i, params in enumerate(others[:2]):
            submit(engine, events, f"o{i}", prompt(3 + 5 * i, start=11 * i), **params)
        submit(engine, events, "batched", target, **seeded)  # a different row of the batch than when alone
        for i, params in enumerate(others[2:], 2):
            submit(engine, events, f"o{i}", prompt(3 + 5 * i, start=11 * i), **params)
        submit(engine, events, "seed8", target, **{**seeded, "seed": 8})
        engine.start()
        events.wait(*events.by_id)
    target_seq = seq_of(runner, target)
    assert all(len(runner.batches[i - 1].chunks) > 1 for i, _ in runner.chunks_of(target_seq))  # always shared
    assert len(alone.tokens("alone")) == 12
    assert events.tokens("batched") == alone.tokens("alone")
    assert alone.tokens("alone") != reference(target, 12)  # it sampled, not argmax
    assert events.tokens("seed8") != alone.tokens("alone")  # and the seed decides the draws
