"""The OpenAI routes on the real server (uvicorn on 127.0.0.1, in this process so that tests can hold the engine
and read its scheduler), driven by the official `openai` client, unmodified, and by `curl -N`. One server serves
a tiny encoder and tiny random decoders (Llama with a chat template, Gemma3 without). Expected values come from
transformers run on the same artifact, or from a second request, never from the code under test."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from tiny_decoders import make_tiny_decoder

pytestmark = pytest.mark.timeout(180)

KEY = "openai-test-key-0123456789"
BODY_LIMIT = 64_000
HI = [{"role": "user", "content": "Hello there, how are you?"}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]}},
          "required": ["ok", "color"], "additionalProperties": False}


class GatedRunner:
    """A DecoderRunner wrapper: while `gate` is clear the next step that computes waits (`held` says one does),
    every batch is recorded, and `freed` is set by the step that releases the KV of sequence `watch`."""

    def __init__(self, inner):
        self.inner = inner
        self.gate, self.held, self.freed = threading.Event(), threading.Event(), threading.Event()
        self.gate.set()
        self.watch: int | None = None
        self.batches: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, batch):
        if not self.gate.is_set() and batch.chunks:  # steps that only free KV (of finished requests) pass
            self.held.set()
            assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append(batch)
        if self.watch is not None and self.watch in batch.free:
            self.freed.set()
        return self.inner.step(batch)


class Stack:
    def __init__(self, engine, metrics, limits, url: str, gated: GatedRunner):
        self.engine, self.metrics, self.limits, self.url, self.gated = engine, metrics, limits, url, gated
        self.gen = engine.get("gated").generator
        self.submitted = threading.Semaphore(0)
        self.aborted = threading.Event()
        submit, abort = self.gen.submit, self.gen.abort

        def counting_submit(request, sink):  # only submits that were accepted count
            submit(request, sink)
            self.submitted.release()

        def noting_abort(request_id):
            self.aborted.set()
            abort(request_id)

        self.gen.submit, self.gen.abort = counting_submit, noting_abort

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=kw.pop("api_key", KEY), max_retries=0, timeout=20,
                             **kw)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)

    def reset_gate(self):
        g = self.gated
        g.gate.set()
        g.held.clear(), g.freed.clear(), self.aborted.clear()
        g.watch = None


def _import(arch: str, tmp: Path, chat_template: bool = True):
    from deploylm.models.importer import import_decoder

    src = make_tiny_decoder(arch, tmp / f"{arch}-src", chat_template=chat_template)
    return import_decoder(str(src), tmp / arch)


@pytest.fixture(scope="module")
def stack(tiny_cls, tmp_path_factory):
    import uvicorn

    from deploylm.generation.scheduler import SchedulerConfig
    from deploylm.serving.engine import Engine, load_model
    from deploylm.serving.http_app import create_app
    from deploylm.serving.limits import Limits
    from deploylm.serving.metrics import ServerMetrics

    tmp = tmp_path_factory.mktemp("openai")
    chat_art, base_art = _import("llama", tmp), _import("gemma3", tmp, chat_template=False)
    limits = Limits(max_body_bytes=BODY_LIMIT, api_key=KEY)
    metrics = ServerMetrics()
    engine = Engine(limits=limits, metrics=metrics)
    engine.add(load_model(tiny_cls.path, "cls"))
    engine.add(load_model(chat_art.path, "tiny"))
    engine.add(load_model(base_art.path, "base"))
    engine.add(load_model(chat_art.path, "gated", decoder=SchedulerConfig(max_waiting=2)))
    gated = GatedRunner(engine.get("gated").generator.runner)
    engine.get("gated").generator.runner = gated
    server = uvicorn.Server(uvicorn.Config(create_app(engine, metrics, limits, generation_timeout_s=60),
                                           host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up, not event ordering: nothing to wait on but uvicorn's flag
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Stack(engine, metrics, limits, f"http://127.0.0.1:{port}", gated)
    gated.gate.set()
    server.should_exit = True
    thread.join(30)
    engine.close()


@pytest.fixture
def s(stack):
    for name in ("tiny", "base", "gated"):  # an engine thread that died would hang every later test
        thread = stack.engine.get(name).generator._thread
        assert thread is not None and thread.is_alive(), f"the engine of '{name}' has stopped"
    stack.reset_gate()
    yield stack
    stack.reset_gate()


def hf_model(stack, name="tiny"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stack.engine.get(name).source, dtype=torch.float32).eval()
    return model, stack.engine.get(name).tokenizer


def good_request_works(s: Stack) -> None:
    r = s.client().chat.completions.create(model="tiny", messages=HI, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


# ---- models --------------------------------------------------------------------------------------------------
def test_one_server_lists_and_serves_encoders_and_decoders(s):
    assert {m.id for m in s.client().models.list().data} == {"cls", "tiny", "base", "gated"}
    with s.http() as c:
        listed = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        pred = c.post("/v1/models/cls/predict", json={"inputs": ["a lovely film"]}).json()
        schema = c.get("/openapi.json").json()
    assert listed["tiny"]["task"] == "text-generation" and listed["tiny"]["max_model_len"] == 256
    assert listed["base"]["max_model_len"] == 256 and listed["cls"]["task"] == "classification"
    assert pred["predictions"][0]["label"] in ("negative", "positive")
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith("ChatCompletionRequest" if "chat" in path else "CompletionRequest")
    good_request_works(s)


# ---- completions and chat, stream and not --------------------------------------------------------------------
def _hf_greedy(model, ids: list[int], steps: int):
    """Greedy tokens and the first step's log-softmax, by plain forward passes."""
    import torch

    out, first = list(ids), None
    with torch.inference_mode():
        for _ in range(steps):
            logp = torch.log_softmax(model(torch.tensor([out])).logits[0, -1].float(), -1)
            first = logp if first is None else first
            out.append(int(logp.argmax()))
    return out[len(ids):], first


def test_completions_greedy_tokens_and_logprobs_match_transformers(s):
    model, tok = hf_model(s)
    prompt = "The quick brown fox"
    r = s.client().completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0, logprobs=3,
                                      extra_body={"ignore_eos": True})
    ids = tok(prompt)["input_ids"]
    expected, first = _hf_greedy(model, ids, 6)
    choice = r.choices[0]
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.system_fingerprint
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 6 and r.usage.prompt_tokens == len(ids)
    assert r.usage.total_tokens == len(ids) + 6
    assert choice.logprobs.tokens == [tok.decode([t]) for t in expected]
    assert choice.logprobs.token_logprobs[0] == pytest.approx(float(first[expected[0]]), abs=1e-4)
    top3 = first.topk(3)
    want = {tok.decode([int(i)]): float(v) for v, i in zip(top3.values, top3.indices)}
    assert choice.logprobs.top_logprobs[0] == pytest.approx(want, abs=1e-4)
    offsets = choice.logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(offsets) == 6


def test_completions_stream_gives_the_same_text_as_non_stream(s):
    c = s.client()
    kw = dict(model="tiny", prompt="Paris is the capital", max_tokens=10, temperature=0)
    whole = c.completions.create(**kw)
    chunks = list(c.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    with_text = [ch for ch in chunks if ch.choices]
    assert all(ch.object == "text_completion" and ch.id == chunks[0].id for ch in chunks)
    assert "".join(ch.choices[0].text for ch in with_text) == whole.choices[0].text
    assert with_text[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_stream_role_first_then_content_and_usage_last(s):
    c = s.client()
    model, tok = hf_model(s)
    kw = dict(model="tiny", messages=HI, max_completion_tokens=12, temperature=0)
    whole = c.chat.completions.create(**kw)
    text = tok.apply_chat_template(HI, tokenize=False, add_generation_prompt=True)
    assert whole.usage.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    assert whole.choices[0].message.role == "assistant"
    plain = list(c.chat.completions.create(**kw, stream=True))
    assert all(ch.usage is None for ch in plain)  # no include_usage: no usage chunk
    chunks = list(c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.choices[0].delta.role is None for ch in chunks[1:-1])
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1]) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_repeated_prompt_reports_cached_tokens(s):
    c = s.client()
    system = [{"role": "system", "content": "You are a careful assistant. " * 6}]
    first = c.chat.completions.create(model="tiny", messages=system + HI, max_tokens=2, temperature=0)
    again = c.chat.completions.create(model="tiny", messages=system + HI, max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens > 32
    assert again.usage.prompt_tokens_details.cached_tokens >= 32  # at least two 16-token blocks of KV reused


def test_n_choices_and_seed_reproducibility(s):
    c = s.client()
    kw = dict(model="tiny", messages=HI, max_tokens=6, temperature=1.0, n=2, extra_body={"ignore_eos": True})
    a = c.chat.completions.create(**kw, seed=7)
    b = c.chat.completions.create(**kw, seed=7)
    others = [c.chat.completions.create(**kw, seed=seed) for seed in (8, 9)]
    texts = lambda r: [ch.message.content for ch in r.choices]  # noqa: E731
    assert [ch.index for ch in a.choices] == [0, 1] and a.usage.completion_tokens == 12
    assert texts(a) == texts(b)
    assert any(texts(o) != texts(a) for o in others)
    chunks = list(c.chat.completions.create(**kw, seed=7, stream=True))
    firsts = {}
    for ch in chunks:
        firsts.setdefault(ch.choices[0].index, ch.choices[0].delta.role)
    assert firsts == {0: "assistant", 1: "assistant"}
    for i in (0, 1):  # the stream of each choice is the non-stream text of the same seed
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices[0].index == i) == texts(a)[i]


def test_stop_strings_cut_the_text_before_the_stop(s):
    c = s.client()
    kw = dict(model="tiny", prompt="Hello world, this is", max_tokens=24, temperature=0,
              extra_body={"ignore_eos": True})
    full = c.completions.create(**kw).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop, full
    for given in (stop, [stop, "\u2603never"]):
        r = c.completions.create(**{**kw, "stop": given})
        assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"
    chat = c.chat.completions.create(model="tiny", messages=HI, max_tokens=24, temperature=0,
                                     extra_body={"ignore_eos": True})
    content = chat.choices[0].message.content
    cut = content[len(content) // 2: len(content) // 2 + 2]
    streamed = list(c.chat.completions.create(model="tiny", messages=HI, max_tokens=24, temperature=0, stop=cut,
                                              stream=True, extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == content[:content.index(cut)]


def test_chat_logprobs_shape(s):
    r = s.client().chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0, logprobs=True,
                                           top_logprobs=3, extra_body={"ignore_eos": True})
    entries = r.choices[0].logprobs.content
    assert len(entries) == 5
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert (e.top_logprobs[0].token, e.top_logprobs[0].logprob) == (e.token, e.logprob)  # greedy: the best
        assert e.bytes == list(e.token.encode())
    plain = s.client().chat.completions.create(model="tiny", messages=HI, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


# ---- bad requests: 400 in OpenAI's shape naming the parameter, then a good request works ---------------------
LONG = "The quick brown fox jumps over the lazy dog. " * 40  # well over the tiny models' 256-token context
BAD = [
    ("chat", dict(max_tokens=-1), "max_tokens", "max_tokens must be an integer >= 1"),
    ("chat", dict(max_completion_tokens=0), "max_completion_tokens", "max_completion_tokens must be an integer >= 1"),
    ("completions", dict(max_tokens=-5), "max_tokens", ">= 1"),
    ("chat", dict(top_p=1.5), "top_p", "(0, 1]"),
    ("chat", dict(n=0), "n", "[1, 16]"),
    ("chat", dict(temperature=3), "temperature", "[0, 2]"),
    ("chat", dict(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role", "'wizard' is not one of"),
    ("chat", dict(messages=[]), "messages", "non-empty"),
    ("chat", dict(messages=[{"role": "user", "content": LONG}]), "messages", "context of 256"),
    ("completions", dict(prompt=LONG), "prompt", "context of 256"),
    ("completions", dict(prompt=[1, 2, 99999]), "prompt[2]", "not a token id"),
    ("completions", dict(logprobs=50), "logprobs", "logprobs must be an integer in [0, 20]"),
    ("chat", dict(top_logprobs=3), "top_logprobs", "logprobs: true"),
    ("chat", dict(temperature="hot"), "temperature", "valid number"),
    ("chat", dict(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    ("chat", dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}),
     "response_format.json_schema.schema", "foo"),
    ("chat", dict(extra_body={"bogus_option": 1}), "bogus_option", "Unrecognized request argument"),
    ("chat", dict(stream_options={"include_usage": True}), "stream_options", "stream is true"),
    ("chat", dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "not supported"),
    ("chat", dict(model="base"), "model", "/v1/completions"),
    ("completions", dict(model="cls"), "model", "encoder"),
]


@pytest.mark.parametrize("route, kw, param, words", BAD, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_parameter_is_400_in_openai_shape(s, route, kw, param, words):
    c = s.client()
    base = dict(model="tiny", max_tokens=4)
    with pytest.raises(openai.BadRequestError) as info:
        if route == "chat":
            c.chat.completions.create(**{"messages": HI, **base, **kw})
        else:
            c.completions.create(**{"prompt": "Hi", **base, **kw})
    err = info.value
    assert err.status_code == 400 and err.body["type"] == "invalid_request_error"
    assert err.body["param"] == param and words in err.body["message"], err.body
    good_request_works(s)


def test_error_body_is_exactly_openai_shaped_and_unknown_model_is_404(s):
    with s.http() as c:
        r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": HI, "n": 0})
        missing = c.post("/v1/completions", json={"prompt": "x"})
        broken = c.post("/v1/completions", content=b'{"model": "tiny", "prompt": ',
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    assert set(r.json()["error"]) == {"message", "type", "param", "code"} and r.json()["error"]["code"] is None
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    assert "Missing required parameter" in missing.json()["error"]["message"]
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as info:
        s.client().chat.completions.create(model="nope", messages=HI)
    assert info.value.status_code == 404 and info.value.body["code"] == "model_not_found"
    assert "Served models" in info.value.body["message"]
    good_request_works(s)


def test_api_key_and_body_limit_apply(s):
    with pytest.raises(openai.AuthenticationError):
        s.client(api_key="wrong-key-wrong-key").chat.completions.create(model="tiny", messages=HI)
    with pytest.raises(openai.APIStatusError) as info:
        s.client().completions.create(model="tiny", prompt="x" * (BODY_LIMIT + 10))
    assert info.value.status_code == 413
    good_request_works(s)


# ---- overload, disconnects, deadline (the gated model) -------------------------------------------------------
def _hold_one(s: Stack, pool: ThreadPoolExecutor, **kw):
    """Submit one request to the gated model and return once its first step is stuck in the runner."""
    s.gated.gate.clear()
    s.gated.held.clear()  # set by an earlier test's hold: wait for this request's own step
    future = pool.submit(s.client().completions.create, model="gated", prompt="hold", max_tokens=4, **kw)
    assert s.gated.held.wait(20) and s.submitted.acquire(timeout=20)
    return future


def test_full_waiting_queue_is_429_with_retry_after(s):
    with ThreadPoolExecutor(4) as pool:
        held = _hold_one(s, pool)
        queued = [pool.submit(s.client().completions.create, model="gated", prompt=p, max_tokens=4)
                  for p in ("one", "two")]  # max_waiting=2: these two fill the queue
        assert all(s.submitted.acquire(timeout=20) for _ in queued)
        with pytest.raises(openai.RateLimitError) as info:
            s.client().completions.create(model="gated", prompt="three", max_tokens=4)
        s.gated.gate.set()
        answers = [f.result(30) for f in [held, *queued]]
    err = info.value
    assert err.status_code == 429 and err.response.headers["retry-after"] == "1"
    assert err.body["code"] == "rate_limit_exceeded" and "capacity" in err.body["message"]
    assert all(a.choices[0].finish_reason in ("stop", "length") for a in answers)
    r = s.client().completions.create(model="gated", prompt="after", max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


def _assert_freed(s: Stack, target: int) -> None:
    """The request's sequence left the running set and no step after its release computed it."""
    assert s.aborted.wait(20), "the server never aborted the request"
    s.gated.gate.set()
    assert s.gated.freed.wait(20), "the engine never released the sequence's KV"
    released_at = next(i for i, b in enumerate(s.gated.batches) if target in b.free)
    r = s.client().completions.create(model="gated", prompt="next one", max_tokens=3)  # more steps run
    assert r.choices[0].finish_reason in ("stop", "length")
    later = s.gated.batches[released_at:]
    assert len(later) > 1 and not any(c.seq_id == target for b in later for c in b.chunks)
    assert target not in [q.seq_id for q in s.gen.scheduler.running + list(s.gen.scheduler.waiting)]
    assert s.gen.stats()["running"] == 0


def test_client_gone_mid_stream_frees_the_slot(s):
    stream = s.client().chat.completions.create(model="gated", messages=HI, max_tokens=200, stream=True,
                                                extra_body={"ignore_eos": True})
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content is not None  # tokens flow
    s.gated.gate.clear()
    assert s.gated.held.wait(20)
    (seq,) = s.gen.scheduler.running
    s.gated.watch = seq.seq_id
    steps_done = len(seq.output_ids)
    stream.close()  # the client goes away with ~190 tokens still to come
    _assert_freed(s, seq.seq_id)
    assert len(seq.output_ids) <= steps_done + 1  # at most the step that was already running


def _raw_post(s: Stack, doc: dict) -> socket.socket:
    """A POST /v1/completions on a bare socket, so that the test decides when the client goes away."""
    body = json.dumps(doc).encode()
    sock = socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)
    return sock


def test_client_gone_before_a_non_stream_answer_aborts_it(s):
    s.gated.gate.clear()
    sock = _raw_post(s, {"model": "gated", "prompt": "hold on", "max_tokens": 100, "ignore_eos": True})
    assert s.gated.held.wait(20)
    (seq,) = s.gen.scheduler.running
    s.gated.watch = seq.seq_id
    sock.close()
    _assert_freed(s, seq.seq_id)


def test_queued_request_of_a_gone_client_never_runs(s):
    with ThreadPoolExecutor(1) as pool:
        held = _hold_one(s, pool)
        (running,) = s.gen.scheduler.running
        first_batch = len(s.gated.batches)
        sock = _raw_post(s, {"model": "gated", "prompt": "queued, then abandoned", "max_tokens": 50})
        assert s.submitted.acquire(timeout=20)  # it is in the engine's queue
        sock.close()
        assert s.aborted.wait(20)
        s.gated.gate.set()
        assert held.result(30).choices[0].finish_reason in ("stop", "length")
    computed = {c.seq_id for b in s.gated.batches[first_batch:] for c in b.chunks}
    assert computed == {running.seq_id}
    assert s.gen.stats()["waiting"] == 0 and s.gen.stats()["running"] == 0


def test_deadline_is_504_in_openai_shape(s):
    from deploylm.serving.http_app import create_app

    app = create_app(s.engine, s.metrics, s.limits, generation_timeout_s=0.3)

    async def late():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {KEY}"}) as c:
            return await c.post("/v1/completions", json={"model": "gated", "prompt": "slow", "max_tokens": 4})

    s.gated.gate.clear()  # its only step never ends before the deadline
    r = asyncio.run(late())
    assert s.gated.held.is_set()
    s.gated.gate.set()
    assert r.status_code == 504 and r.json()["error"]["type"] == "server_error"
    assert "0.3 s deadline" in r.json()["error"]["message"]
    assert s.aborted.is_set()
    r = s.client().completions.create(model="gated", prompt="in time", max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- metrics and curl --------------------------------------------------------------------------------------------
def _metric(s: Stack, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{s.url}/metrics", timeout=10).text
    return sum(x.value for fam in text_string_to_metric_families(text) for x in fam.samples
               if x.name == name and all(x.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_tokens_and_time_to_first_token(s):
    names = ("deploylm_time_to_first_token_seconds_count", "deploylm_inter_token_latency_seconds_count",
             "deploylm_prompt_tokens_total", "deploylm_generation_tokens_total")
    before = {n: _metric(s, n, model="tiny") for n in names}
    prompt = "Count these tokens, then count them again: one two three four five six seven eight nine ten."
    usages = [s.client().completions.create(model="tiny", prompt=prompt, max_tokens=5,
                                            extra_body={"ignore_eos": True}).usage for _ in range(2)]
    delta = {n: _metric(s, n, model="tiny") - before[n] for n in names}
    assert delta["deploylm_time_to_first_token_seconds_count"] == 2
    assert delta["deploylm_inter_token_latency_seconds_count"] == 2 * 4
    assert delta["deploylm_prompt_tokens_total"] == sum(u.prompt_tokens for u in usages) >= 2 * 16
    assert delta["deploylm_generation_tokens_total"] == 2 * 5
    assert _metric(s, "deploylm_running_requests", model="tiny") == 0
    assert _metric(s, "deploylm_kv_cache_used_tokens", model="tiny") >= 16  # the prefix cache keeps the prompt
    assert 0 < _metric(s, "deploylm_kv_cache_usage_ratio", model="tiny") < 1
    assert _metric(s, "deploylm_prefix_cache_hit_rate", model="tiny") > 0  # the second request hit it


def test_curl_streams_server_sent_events(s):
    body = json.dumps({"model": "tiny", "messages": HI, "max_tokens": 8, "temperature": 0, "stream": True})
    out = subprocess.run(["curl", "-sN", f"{s.url}/v1/chat/completions", "-H", "Content-Type: application/json",
                          "-H", f"Authorization: Bearer {KEY}", "-d", body], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    events = [line for line in out.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    docs = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    whole = s.client().chat.completions.create(model="tiny", messages=HI, max_tokens=8, temperature=0)
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in docs) == whole.choices[0].message.content


# last: a grammar failure in the engine thread would stop the model for every test after it
def test_response_format_json_object_and_json_schema(s):
    c = s.client()
    obj = c.chat.completions.create(model="tiny", messages=HI, max_tokens=200, temperature=0,
                                    response_format={"type": "json_object"})
    assert obj.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    for seed in (1, 2):
        r = c.chat.completions.create(model="tiny", messages=HI, max_tokens=60, temperature=1.0, seed=seed,
                                      response_format=rf)
        doc = json.loads(r.choices[0].message.content)
        assert set(doc) == {"ok", "color"} and isinstance(doc["ok"], bool) and doc["color"] in ("red", "green", "blue")
    streamed = list(c.completions.create(model="base", prompt="JSON:", max_tokens=60, temperature=0, stream=True,
                                         extra_body={"response_format": rf}))
    doc = json.loads("".join(ch.choices[0].text for ch in streamed))
    assert set(doc) == {"ok", "color"}
