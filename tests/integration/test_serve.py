"""The real `deploylm serve` process on 127.0.0.1 (ephemeral ports), driven by unmodified clients:
tritonclient.http, tritonclient.grpc, httpx, and prometheus_client's text parser for /metrics.
Every bad request must get a clear 4xx and leave the server healthy (a good request follows each)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import reference_predictions

pytestmark = pytest.mark.timeout(240)

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def auth() -> dict:
    return dict(AUTH)  # a fresh dict: tritonclient adds its own headers to the one it is given


def grpc_auth() -> dict:
    return {"authorization": AUTH["Authorization"]}  # gRPC metadata keys are lower-case


DEPLOYLM = str(Path(sys.executable).with_name("deploylm"))


class Server:
    def __init__(self, proc: subprocess.Popen, http: str, grpc: str, log: Path, artifacts: list[Path] = ()):
        self.proc, self.http, self.grpc, self.log = proc, http, grpc, log
        self.artifacts = list(artifacts)

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.http, timeout=30, **kw)


def start_server(tmp: Path, artifacts: list[Path], *extra: str, names: list[str] = ()) -> Server:
    log = tmp / "server.log"
    cmd = [DEPLOYLM, "serve", *map(str, artifacts), "--port", "0", *extra]
    if "--grpc-port" not in extra:
        cmd += ["--grpc-port", "0"]
    for n in names:
        cmd += ["--name", n]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEPLOYLM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    http = grpc = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"http=(http://127\.0\.0\.1:\d+)(?: grpc=(127\.0\.0\.1:\d+))?", log.read_text())
        if found:
            http, grpc = found.groups()
            try:
                if httpx.get(f"{http}/v2/health/ready", timeout=2).status_code == 200:
                    return Server(proc, http, grpc, log, artifacts)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not become ready:\n{log.read_text()}")


def stop_server(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(60)


@pytest.fixture(scope="module")
def server(tiny_cls, tiny_ner, tmp_path_factory):
    from conftest import build_tiny_artifact

    tmp = tmp_path_factory.mktemp("serve")
    # max_length 200 > the model's 128 positions: long texts make the runner itself fail (a real 500).
    broken = build_tiny_artifact(tmp / "broken", "classification", max_length=200)
    (tmp / "key.txt").write_text(KEY + "\n")
    srv = start_server(tmp, [tiny_cls.path, tiny_ner.path, broken.path], "--api-key-file", str(tmp / "key.txt"),
                       "--max-queue", "4", names=["cls", "ner", "broken"])
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()
    assert "deploylm: stopped" in srv.log.read_text()


def good_request_works(server: Server) -> None:
    with server.client(headers=auth()) as c:
        r = c.post("/v1/models/cls/predict", json={"inputs": ["still healthy"]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in ("negative", "positive")


# ---- happy paths with third-party clients ------------------------------------------------------------
def test_task_endpoints_and_model_list(server):
    with server.client(headers=auth()) as c:
        models = c.get("/v1/models").json()
        cls = c.post("/v1/models/cls/predict", json={"inputs": ["a lovely film", "a dull one"]}).json()
        ner = c.post("/v1/models/ner/predict", json={"inputs": ["John lives in Paris ."]}).json()
        docs = c.get("/docs")
        schema = c.get("/openapi.json").json()
    assert models["object"] == "list" and {m["id"] for m in models["data"]} == {"cls", "ner", "broken"}
    want = reference_predictions(server.artifacts[0], ["a lovely film", "a dull one"])
    assert [p["label"] for p in cls["predictions"]] == [label for label, _ in want]
    assert [p["score"] for p in cls["predictions"]] == pytest.approx([score for _, score in want], abs=1e-5)
    for ent in ner["predictions"][0]["entities"]:  # spans point into the text
        assert "John lives in Paris ."[ent["start"]: ent["end"]] == ent["text"]
    assert docs.status_code == 200 and "/v2/models/{name}/infer" in schema["paths"]
    curl = re.search(r"deploylm: try: (curl .*)", server.log.read_text())  # the line users paste
    assert curl and f"{server.http}/v1/models/cls/predict" in curl.group(1) and "Bearer" in curl.group(1)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http(server, binary):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cls", headers=auth())
    meta = client.get_model_metadata("cls", headers=auth())
    assert meta["inputs"][0]["name"] == "TEXT" and {o["name"] for o in meta["outputs"]} == {"LABEL", "SCORE"}
    texts = np.array([b"a lovely film", "caf\u00e9 na\u00efve \u2013 ok".encode()], dtype=object)
    inp = httpclient.InferInput("TEXT", [2], "BYTES")
    inp.set_data_from_numpy(texts, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("LABEL", "SCORE")]
    res = client.infer("cls", [inp], outputs=outs, headers=auth())
    labels, scores = res.as_numpy("LABEL"), res.as_numpy("SCORE")
    with server.client(headers=auth()) as c:  # the same answer as the task endpoint
        ref = c.post("/v1/models/cls/predict", json={"inputs": [t.decode() for t in texts]}).json()["predictions"]
    assert [l.decode() if isinstance(l, bytes) else l for l in labels] == [p["label"] for p in ref]
    np.testing.assert_allclose(scores, [p["score"] for p in ref], rtol=1e-5)
    client.close()


def test_tritonclient_http_ner_entities(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    inp = httpclient.InferInput("TEXT", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"Mary Smith visited Berlin"], dtype=object))
    res = client.infer("ner", [inp], headers=auth())  # no outputs named: server sends all, binary
    entities = json.loads(res.as_numpy("ENTITIES")[0])
    assert isinstance(entities, list)
    assert all("Mary Smith visited Berlin"[e["start"]: e["end"]] == e["text"] for e in entities)
    client.close()


def test_tritonclient_grpc(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cls", headers=grpc_auth())
    meta = client.get_model_metadata("ner", headers=grpc_auth())
    assert meta.inputs[0].datatype == "BYTES" and meta.outputs[0].name == "ENTITIES"
    inp = grpcclient.InferInput("TEXT", [3], "BYTES")
    texts = [b"great", b"terrible movie", b"fine"]
    inp.set_data_from_numpy(np.array(texts, dtype=object))
    res = client.infer("cls", [inp], headers=grpc_auth())
    with server.client(headers=grpc_auth()) as c:
        ref = c.post("/v1/models/cls/predict", json={"inputs": [t.decode() for t in texts]}).json()["predictions"]
    assert [l.decode() for l in res.as_numpy("LABEL")] == [p["label"] for p in ref]
    np.testing.assert_allclose(res.as_numpy("SCORE"), [p["score"] for p in ref], rtol=1e-5)
    client.close()


# ---- bad input: a clear 4xx, then a good request still works --------------------------------------
BAD_REST = [
    ("malformed JSON", "/v1/models/cls/predict", b'{"inputs": ["x"', 400, "not valid JSON"),
    ("not an object", "/v1/models/cls/predict", b'["x"]', 400, "JSON object"),
    ("wrong element type", "/v1/models/cls/predict", b'{"inputs": [1, 2]}', 400, "must be a string"),
    ("inputs not a list", "/v1/models/cls/predict", b'{"inputs": "x"}', 400, "list of strings"),
    ("empty list", "/v1/models/cls/predict", b'{"inputs": []}', 400, "empty"),
    ("10,000 inputs", "/v1/models/cls/predict", json.dumps({"inputs": ["a"] * 10_000}).encode(), 400, "limit is 256"),
    ("1 MB text", "/v1/models/cls/predict", json.dumps({"inputs": ["x" * 1_000_000]}).encode(), 400,
     "limit is 10000"),
    ("2 MB body", "/v1/models/cls/predict", json.dumps({"inputs": ["x" * 2_000_000]}).encode(), 413, "exceeds"),
    ("invalid UTF-8", "/v1/models/cls/predict", b'{"inputs": ["\xff\xfe bad"]}', 400, "UTF-8"),
    ("unknown model", "/v1/models/nope/predict", b'{"inputs": ["x"]}', 404, "Served models"),
    ("OIP wrong datatype", "/v2/models/cls/infer",
     b'{"inputs": [{"name": "TEXT", "datatype": "FP32", "shape": [1], "data": [1.0]}]}', 400, "BYTES"),
    ("OIP shape/data mismatch", "/v2/models/cls/infer",
     b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [3], "data": ["a"]}]}', 400, "shape"),
    ("OIP bad shape", "/v2/models/cls/infer",
     b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]}', 400, "shape"),
    ("OIP wrong input name", "/v2/models/cls/infer",
     b'{"inputs": [{"name": "IDS", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', 400, "TEXT"),
    ("OIP unknown output", "/v2/models/cls/infer",
     b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "outputs": [{"name": "X"}]}',
     400, "Unknown output"),
    ("OIP no inputs", "/v2/models/cls/infer", b'{"inputs": []}', 400, "exactly one"),
]


@pytest.mark.parametrize("what, path, body, status, words", BAD_REST, ids=[b[0] for b in BAD_REST])
def test_bad_rest_input_gets_clear_4xx(server, what, path, body, status, words):
    with server.client(headers={**AUTH, "Content-Type": "application/json"}) as c:
        r = c.post(path, content=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    good_request_works(server)


def test_binary_oip_with_invalid_utf8_and_lying_lengths(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    inp = httpclient.InferInput("TEXT", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"\xff\xfe not utf-8"], dtype=object))
    with pytest.raises(InferenceServerException, match="UTF-8"):
        client.infer("cls", [inp], headers=auth())
    header = b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}]}'
    body = header + (1000).to_bytes(4, "little") + b"abcd"  # claims 1000 bytes, has 4
    with server.client(headers={**AUTH, "Inference-Header-Content-Length": str(len(header))}) as c:
        r = c.post("/v2/models/cls/infer", content=body)
    assert r.status_code == 400 and "past the data end" in r.json()["error"]
    client.close()
    good_request_works(server)


def test_wrong_method_is_405_with_allow(server):
    """Review bug: 405 answers carried no Allow header."""
    with server.client(headers=auth()) as c:
        r = c.get("/v1/models/cls/predict")
        listing = c.delete("/v1/models")
    assert r.status_code == 405 and r.headers.get("allow") == "POST", r.headers
    assert listing.status_code == 405 and listing.headers.get("allow") == "GET"
    assert "error" in r.json()
    good_request_works(server)


@pytest.mark.parametrize("size", ['"8"', "8.5", "true", "-1", "999"])
def test_binary_data_size_that_is_not_a_byte_count_in_the_body_is_400(server, size):
    """Review bug: a non-integer binary_data_size reached int() unchecked and answered 500."""
    header = ('{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": '
              + size + '}}]}').encode()
    body = header + (4).to_bytes(4, "little") + b"abcd"
    with server.client(headers={**AUTH, "Inference-Header-Content-Length": str(len(header))}) as c:
        r = c.post("/v2/models/cls/infer", content=body)
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"], r.text
    good_request_works(server)


def test_grpc_bad_input_gets_invalid_argument(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc)
    inp = grpcclient.InferInput("TEXT", [1], "INT64")
    inp.set_data_from_numpy(np.array([7], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="BYTES") as info:
        client.infer("cls", [inp], headers=grpc_auth())
    assert "INVALID_ARGUMENT" in str(info.value.status())
    ok = grpcclient.InferInput("TEXT", [1], "BYTES")
    ok.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException, match="Unknown model") as info:
        client.infer("nope", [ok], headers=grpc_auth())
    assert "NOT_FOUND" in str(info.value.status())
    with pytest.raises(InferenceServerException, match="API key"):
        client.infer("cls", [ok])
    assert client.infer("cls", [ok], headers=grpc_auth()).as_numpy("LABEL").shape == (1,)
    client.close()


def test_api_key_required_except_on_health_and_metrics(server):
    with server.client() as c:
        missing = c.post("/v1/models/cls/predict", json={"inputs": ["x"]})
        wrong = c.post("/v1/models/cls/predict", json={"inputs": ["x"]}, headers={"Authorization": "Bearer nope"})
        listing = c.get("/v1/models")
        open_ = [c.get(p).status_code for p in ("/v2/health/live", "/v2/health/ready", "/metrics")]
    assert missing.status_code == wrong.status_code == listing.status_code == 401
    assert "API key" in missing.json()["error"] and missing.headers["www-authenticate"] == "Bearer"
    assert open_ == [200, 200, 200]
    good_request_works(server)


def test_runner_exception_is_500_and_server_keeps_serving(server):
    with server.client(headers=auth()) as c:
        short = c.post("/v1/models/broken/predict", json={"inputs": ["short text works"]})
        long = c.post("/v1/models/broken/predict", json={"inputs": ["word " * 300]})
    assert short.status_code == 200
    assert long.status_code == 500 and "failed on this batch" in long.json()["error"]
    with server.client(headers=auth()) as c:
        assert c.post("/v1/models/broken/predict", json={"inputs": ["and again"]}).status_code == 200
    good_request_works(server)


def test_overload_beyond_queue_is_refused_quickly_and_disconnects_are_dropped(server):
    texts = [" ".join(["long words here"] * 20)] * 256

    async def flood():
        async with httpx.AsyncClient(base_url=server.http, headers=auth(), timeout=30,
                                     limits=httpx.Limits(max_connections=100)) as c:
            async def one():
                t0 = time.perf_counter()
                r = await c.post("/v1/models/cls/predict", json={"inputs": texts})
                return r.status_code, time.perf_counter() - t0, r
            return await asyncio.gather(*(one() for _ in range(60)))

    results = asyncio.run(flood())
    statuses = [s for s, _, _ in results]
    refused = [(t, r) for s, t, r in results if s == 429]
    assert set(statuses) <= {200, 429} and refused and statuses.count(200) >= 4
    assert "overloaded" in refused[0][1].json()["error"]
    assert all(r.headers.get("retry-after") == "1" for _, r in refused)  # serving/status.py: 429 says when

    async def leave_early():  # clients that give up while their request waits in the queue
        async with httpx.AsyncClient(base_url=server.http, headers=auth(), timeout=0.05) as c:
            async def one():
                try:
                    await c.post("/v1/models/cls/predict", json={"inputs": texts})
                except httpx.TimeoutException:
                    pass
            await asyncio.gather(*(one() for _ in range(4)))

    asyncio.run(leave_early())
    good_request_works(server)

    def gone_counted() -> float:
        return metric_value(server, "deploylm_requests_total", status="499") + \
            metric_value(server, "deploylm_requests_dropped_total", reason="cancelled")

    deadline = time.monotonic() + 30  # a wait for a condition (the server counts them as it notices)
    while gone_counted() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone_counted() >= 1


def metric_value(server: Server, sample_name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.http}/metrics", timeout=10).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_count_what_happened(server):
    from prometheus_client.parser import text_string_to_metric_families

    good_request_works(server)
    text = httpx.get(f"{server.http}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"deploylm_requests", "deploylm_request_latency_seconds", "deploylm_batch_size",
            "deploylm_queue_depth"} <= set(families)
    ok = metric_value(server, "deploylm_requests_total", model="cls", status="200")
    assert ok >= 1
    assert metric_value(server, "deploylm_batch_size_count", model="cls") >= 1
    assert metric_value(server, "deploylm_request_latency_seconds_count", model="cls", protocol="http") >= 1
    assert any(s.labels["model"] == "cls" for s in families["deploylm_queue_depth"].samples)
    good_request_works(server)
    assert metric_value(server, "deploylm_requests_total", model="cls", status="200") == ok + 1


def test_graceful_shutdown_answers_in_flight_requests(tiny_cls, tmp_path):
    srv = start_server(tmp_path, [tiny_cls.path], "--grpc-port", "-1")

    async def during_shutdown():
        texts = [" ".join(["some words"] * 30)] * 256
        async with httpx.AsyncClient(base_url=srv.http, timeout=30) as c:
            pending = [asyncio.ensure_future(c.post(f"/v1/models/{tiny_cls.name}/predict", json={"inputs": texts}))
                       for _ in range(4)]
            await asyncio.sleep(0.05)
            srv.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*pending)

    answers = asyncio.run(during_shutdown())
    assert srv.proc.wait(60) == 0
    assert [r.status_code for r in answers] == [200] * 4
    assert all(len(r.json()["predictions"]) == 256 for r in answers)
    assert "deploylm: stopped" in srv.log.read_text()


def test_versions_of_one_model_side_by_side(tiny_cls, tmp_path):
    """NAME addresses the highest version, NAME/versions/V (OIP and /v1) or NAME:V one version; the two
    versions here have different label sets, so each answer shows which artifact computed it."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from conftest import build_tiny_artifact
    from prometheus_client.parser import text_string_to_metric_families

    v10 = build_tiny_artifact(tmp_path / "v10", "classification", labels=["bad", "good"], seed=1)
    srv = start_server(tmp_path, [tiny_cls.path, v10.path], names=["sent:2", "sent:10"])
    try:
        with srv.client() as c:
            listed = c.get("/v1/models").json()["data"]
            latest = c.post("/v1/models/sent/predict", json={"inputs": ["fine"]}).json()
            v2 = c.post("/v1/models/sent/versions/2/predict", json={"inputs": ["fine"]}).json()
            by_id = c.post("/v1/models/sent:2/predict", json={"inputs": ["fine"]}).json()
            missing = c.post("/v1/models/sent/versions/3/predict", json={"inputs": ["fine"]})
            meta = c.get("/v2/models/sent").json()
            ready = c.get("/v2/models/sent/versions/2/ready")
        assert [(m["id"], m["version"]) for m in listed] == [("sent", "10"), ("sent:2", "2")]  # 10 > 2, numerically
        assert latest["version"] == "10" and latest["predictions"][0]["label"] in ("bad", "good")
        assert v2["version"] == by_id["version"] == "2" and v2["predictions"][0]["label"] in ("negative", "positive")
        assert missing.status_code == 404 and "served versions: 2, 10" in missing.json()["error"]
        assert meta["versions"] == ["2", "10"] and ready.status_code == 200

        oip = httpclient.InferenceServerClient(srv.http.removeprefix("http://"))
        inp = httpclient.InferInput("TEXT", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"fine"], dtype=object))
        res = oip.infer("sent", [inp], model_version="2")
        assert res.get_response()["model_version"] == "2" and res.as_numpy("LABEL")[0] in (b"negative", b"positive")
        g = grpcclient.InferenceServerClient(srv.grpc)
        ginp = grpcclient.InferInput("TEXT", [1], "BYTES")
        ginp.set_data_from_numpy(np.array([b"fine"], dtype=object))
        assert g.infer("sent", [ginp]).as_numpy("LABEL")[0] in (b"bad", b"good")
        assert g.infer("sent", [ginp], model_version="2").as_numpy("LABEL")[0] in (b"negative", b"positive")
        with pytest.raises(Exception, match="no version '7'"):
            g.infer("sent", [ginp], model_version="7")
        with srv.client() as c:
            metrics = c.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        versions = {s.labels["version"] for s in families["deploylm_requests"].samples
                    if s.labels.get("model") == "sent" and s.name == "deploylm_requests_total"}
        assert versions == {"2", "10"}
    finally:
        assert stop_server(srv) == 0, srv.log.read_text()
