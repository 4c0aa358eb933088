"""Engine + batcher with a fake runner (real tokenizer from the tiny artifact): batching, routing of
results, token budget, queue full, deadlines, cancellation, runner failure, drain on close."""

from __future__ import annotations

import asyncio
import platform
import threading

import numpy as np
import pytest

from deploylm.errors import RequestError
from deploylm.evaluation import load_tokenizer
from deploylm.serving.batcher import BatchConfig
from deploylm.serving.engine import Engine, ServedModel
from deploylm.serving.limits import Limits
from deploylm.serving.memory import HeapTrimmer, malloc_trim
from deploylm.serving.metrics import ServerMetrics
from deploylm.tasks import get_task


class FakeRunner:
    """Label = parity of each row's token count (so every answer proves which text it came from).
    `gate` blocks run() until set; `fail` makes the next call raise."""

    backend = "fake"
    input_names = ("input_ids", "attention_mask")

    def __init__(self):
        self.calls: list[tuple[int, int]] = []  # (rows, padded width)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def run(self, batch):
        self.entered.set()
        self.gate.wait(10)
        rows, width = batch["input_ids"].shape
        self.calls.append((rows, width))
        if self.fail:
            self.fail = False
            raise RuntimeError("simulated kernel failure")
        odd = batch["attention_mask"].sum(1) % 2 == 1
        return {"logits": np.stack([np.where(odd, 0.0, 3.0), np.where(odd, 3.0, 0.0)], axis=1).astype(np.float32)}


@pytest.fixture(scope="module")
def tokenizer(tiny_cls):
    return load_tokenizer(tiny_cls)


def make_engine(tokenizer, **batch) -> tuple[Engine, FakeRunner, ServerMetrics]:
    runner, metrics = FakeRunner(), ServerMetrics()
    timeout = batch.pop("timeout_s", 10.0)
    engine = Engine(BatchConfig(**batch), Limits(), timeout, metrics)
    engine.add(ServedModel("m", get_task("classification"), tokenizer, runner, ["even", "odd"], 64), warmup=False)
    return engine, runner, metrics


def expected_label(tokenizer, text: str) -> str:
    return "odd" if len(tokenizer(text)["input_ids"]) % 2 else "even"


TEXTS = ["a", "a b", "a b c", "a b c d", "one two three four five", "x y", "hello there general", "z"]


async def _hold_runner(engine, runner, first_text="hold"):
    """Start one request and keep the runner busy inside it, so that later requests queue up."""
    runner.gate.clear()
    runner.entered.clear()
    first = asyncio.ensure_future(engine.submit("m", [first_text]))
    while not runner.entered.is_set():
        await asyncio.sleep(0.005)
    return first


def test_queued_requests_share_one_batch_and_get_their_own_answers(tokenizer):
    engine, runner, metrics = make_engine(tokenizer, max_batch_size=32, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        rest = [asyncio.ensure_future(engine.submit("m", [t])) for t in TEXTS]
        await asyncio.sleep(0.05)
        runner.gate.set()
        return await first, await asyncio.gather(*rest)

    _, answers = asyncio.run(scenario())
    engine.close()
    assert [rows for rows, _ in runner.calls] == [1, len(TEXTS)]
    assert [a[0]["label"] for a in answers] == [expected_label(tokenizer, t) for t in TEXTS]
    assert metrics.batch_size.labels("m", "1")._sum.get() == 1 + len(TEXTS)


def test_batches_respect_max_size_and_a_big_request_keeps_input_order(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_batch_size=3, max_wait_ms=1)
    answers = asyncio.run(engine.submit("m", TEXTS))
    engine.close()
    assert all(rows <= 3 for rows, _ in runner.calls) and sum(r for r, _ in runner.calls) == len(TEXTS)
    assert [a["label"] for a in answers] == [expected_label(tokenizer, t) for t in TEXTS]


def test_token_budget_splits_batches_and_keeps_short_texts_apart_from_long(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_batch_size=32, max_wait_ms=1, max_batch_tokens=60)
    long_text = " ".join(["word"] * 40)
    texts = ["hi", "yo", long_text, "ok", long_text]
    asyncio.run(engine.submit("m", texts))
    engine.close()
    assert all(rows * width <= 60 or rows == 1 for rows, width in runner.calls)
    short_calls = [(r, w) for r, w in runner.calls if w < 10]
    assert short_calls and sum(r for r, _ in short_calls) == 3  # the three short texts were not padded to 42


def test_full_queue_refuses_at_once_with_429(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_queue=2, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        queued = [asyncio.ensure_future(engine.submit("m", [t])) for t in ("a", "b")]
        await asyncio.sleep(0.02)
        with pytest.raises(RequestError) as info:
            await asyncio.wait_for(engine.submit("m", ["c"]), 1.0)
        runner.gate.set()
        await first
        await asyncio.gather(*queued)
        return info.value

    err = asyncio.run(scenario())
    engine.close()
    assert err.status == 429 and "max-queue" in str(err)


def test_request_past_its_deadline_fails_504_and_is_never_computed(tokenizer):
    engine, runner, metrics = make_engine(tokenizer, max_wait_ms=1, timeout_s=0.2)

    async def scenario():
        first = await _hold_runner(engine, runner)
        late = asyncio.ensure_future(engine.submit("m", ["never computed"]))
        with pytest.raises(RequestError) as info:
            await late
        runner.gate.set()
        with pytest.raises(RequestError):
            await first  # also past 0.2 s while the runner was held
        return info.value

    err = asyncio.run(scenario())
    after = asyncio.run(engine.submit("m", ["still serving"], timeout_s=5))
    engine.close()
    assert err.status == 504
    assert [rows for rows, _ in runner.calls] == [1, 1]  # the held request, then "still serving"
    assert after[0]["label"] == expected_label(tokenizer, "still serving")


def test_cancelled_request_is_dropped_before_compute(tokenizer):
    engine, runner, metrics = make_engine(tokenizer, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        gone = asyncio.ensure_future(engine.submit("m", ["client went away"]))
        kept = asyncio.ensure_future(engine.submit("m", ["client stayed", "and another"]))
        await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.sleep(0.01)
        runner.gate.set()
        await first
        return await kept

    kept = asyncio.run(scenario())
    engine.close()
    assert [rows for rows, _ in runner.calls] == [1, 2]
    assert len(kept) == 2
    assert metrics.dropped.labels("m", "1", "cancelled")._value.get() == 1


def test_abort_by_request_id(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        victim = asyncio.ensure_future(engine.submit("m", ["abort me"], request_id="r-42"))
        await asyncio.sleep(0.02)
        aborted = engine.abort("r-42")
        runner.gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await victim
        return aborted

    assert asyncio.run(scenario()) is True
    engine.close()
    assert [rows for rows, _ in runner.calls] == [1]


def test_two_clients_with_the_same_request_id_do_not_collide(tokenizer):
    """Review bug: in-flight requests were keyed by the client's id, so a second request with the same id replaced
    the first in the registry (the first could no longer be found, nor unregistered correctly)."""
    engine, runner, _ = make_engine(tokenizer, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        a = asyncio.ensure_future(engine.submit("m", ["client a"], request_id="dup"))
        b = asyncio.ensure_future(engine.submit("m", ["client b"], request_id="dup"))
        while engine.get("m").batcher.queue_depth() < 2:  # a and b both queued behind the held request
            await asyncio.sleep(0.001)
        aborted = engine.abort("dup")
        runner.gate.set()
        await first
        outcomes = []
        for fut in (a, b):
            try:
                await fut
                outcomes.append("answered")
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        return aborted, outcomes

    aborted, outcomes = asyncio.run(scenario())
    engine.close()
    assert aborted is True and outcomes == ["cancelled", "cancelled"]
    assert [rows for rows, _ in runner.calls] == [1]  # only the held request was computed


def test_runner_exception_fails_that_batch_with_500_and_engine_keeps_serving(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_wait_ms=1)
    runner.fail = True
    with pytest.raises(RequestError) as info:
        asyncio.run(engine.submit("m", ["boom"]))
    ok = asyncio.run(engine.submit("m", ["fine now"]))
    engine.close()
    assert info.value.status == 500 and "simulated kernel failure" in str(info.value)
    assert ok[0]["label"] == expected_label(tokenizer, "fine now")


def test_close_drains_queued_requests_then_refuses_new_ones(tokenizer):
    engine, runner, _ = make_engine(tokenizer, max_wait_ms=1)

    async def scenario():
        first = await _hold_runner(engine, runner)
        queued = [asyncio.ensure_future(engine.submit("m", [t])) for t in TEXTS[:3]]
        await asyncio.sleep(0.02)
        closing = asyncio.ensure_future(asyncio.to_thread(engine.close, True))
        await asyncio.sleep(0.02)
        runner.gate.set()
        done = await asyncio.gather(first, *queued)
        await closing
        with pytest.raises(RequestError) as info:
            await engine.submit("m", ["too late"])
        return done, info.value

    done, err = asyncio.run(scenario())
    assert len(done) == 4 and all(d[0]["label"] in ("odd", "even") for d in done)
    assert err.status == 503 and not engine.ready


def test_batcher_hands_freed_heap_back_every_few_batches(tokenizer):
    """Batch shapes vary, and freed activations of one size stay in the heap as holes the next does not fit
    (serving/memory.py): the batcher trims after every `every`-th batch, off the event loop."""
    engine, runner, _ = make_engine(tokenizer)
    trims = []
    engine.get("m").batcher.trimmer = HeapTrimmer(every=3, trim=lambda pad: trims.append(pad) or 1)

    async def one_batch_each():
        for text in TEXTS:  # one at a time: each request is a batch of its own
            await engine.submit("m", [text])

    asyncio.run(one_batch_each())
    engine.close()  # joins the batcher thread: every after-batch call has happened
    assert len(runner.calls) == len(TEXTS) and trims == [0] * (len(TEXTS) // 3)
    assert malloc_trim() is not None or platform.libc_ver()[0] != "glibc"  # the real one, on glibc


@pytest.mark.parametrize("inputs, words", [
    ([], "empty"), ("just a string", "list"), ([1, 2], "string"), (["x"] * 257, "257 inputs"),
    (["y" * 10_001], "10001 characters"),
])
def test_limits_refuse_bad_inputs_with_400(tokenizer, inputs, words):
    engine, runner, _ = make_engine(tokenizer)
    with pytest.raises(RequestError) as info:
        asyncio.run(engine.submit("m", inputs))
    engine.close()
    assert info.value.status == 400 and words in str(info.value)
    assert runner.calls == []


def test_truncate_cuts_long_texts_instead_of_refusing(tokenizer):
    runner = FakeRunner()
    engine = Engine(BatchConfig(), Limits(truncate=True), 10.0, ServerMetrics())
    engine.add(ServedModel("m", get_task("classification"), tokenizer, runner, ["even", "odd"], 64), warmup=False)
    answers = asyncio.run(engine.submit("m", ["word " * 5000]))
    engine.close()
    assert len(answers) == 1 and runner.calls[0][1] == 64  # cut to the model's max length


def test_unknown_model_is_404_and_names_the_served_ones(tokenizer):
    engine, _, _ = make_engine(tokenizer)
    with pytest.raises(RequestError) as info:
        asyncio.run(engine.submit("nope", ["x"]))
    engine.close()
    assert info.value.status == 404 and "m" in str(info.value)


def test_versions_are_routed_to_their_own_runner(tokenizer):
    engine, v1, _ = make_engine(tokenizer)
    v2 = FakeRunner()
    engine.add(ServedModel("m", get_task("classification"), tokenizer, v2, ["even", "odd"], 64, version="2"),
               warmup=False)
    try:
        assert engine.get("m").version == "2" and engine.get("m", "1").version == "1"
        assert engine.get("m:1").version == "1"
        with pytest.raises(RequestError, match="no version '3'; served versions: 1, 2") as err:
            engine.get("m", "3")
        assert err.value.status == 404

        async def both():
            await engine.submit("m", ["to the latest"])
            await engine.submit("m", ["to version one", "and again"], version="1")

        asyncio.run(both())
        assert [rows for rows, _ in v2.calls] == [1] and sum(rows for rows, _ in v1.calls) == 2
    finally:
        engine.close()


def test_serve_names_with_versions():
    from deploylm.errors import ConfigError
    from deploylm.serving.server import ServeConfig, model_names

    assert model_names(ServeConfig(["a", "b"], ["sst2:1", "sst2:2"])) == [("sst2", "1"), ("sst2", "2")]
    assert model_names(ServeConfig(["/x/runs/int8"])) == [("int8", "1")]
    with pytest.raises(ConfigError, match="sst2:1"):
        model_names(ServeConfig(["a", "b"], ["sst2", "sst2:1"]))  # no version given means 1
    with pytest.raises(ConfigError, match="NAME:VERSION"):
        model_names(ServeConfig(["a"], ["sst2:v 2"]))


def test_adding_a_model_while_the_event_loop_iterates_the_models_is_safe(tokenizer):
    """Review bug: models are added on a loader thread while /metrics and readiness iterate the same dicts on the
    event loop; an add between two steps of an iteration raised 'dictionary changed size during iteration'."""
    engine, _, _ = make_engine(tokenizer, max_wait_ms=1)
    models, versions = iter(engine.models.values()), iter(engine._versions.items())
    next(models), next(versions)
    engine.add(ServedModel("m2", get_task("classification"), tokenizer, FakeRunner(), ["even", "odd"], 64),
               warmup=False)
    assert list(models) == [] and list(versions) == []  # the readers finish over what they started with
    assert sorted(engine.models) == ["m2:1", "m:1"] and engine.names() == ["m", "m2"]
    engine.close()
