"""An extractive-QA artifact behind the real `deploylm serve` (127.0.0.1, ephemeral ports): question + context
through httpx on /v1 and tritonclient on OIP v2 over REST and gRPC (QUESTION, CONTEXT in; ANSWER, SCORE, START,
END out), a context longer than one window folded back into one answer, and bad items as 400s."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_tiny_artifact
from test_serve import start_server, stop_server

pytestmark = pytest.mark.timeout(240)

LONG = " ".join(f"filler{i}" for i in range(120)) + " The capital of France is Paris."
ITEMS = [{"question": "What is the capital of France?", "context": LONG},
         {"question": "Who wrote it?", "context": "Ren\u00e9 wrote the letter in 1920."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-qa")
    art = build_tiny_artifact(tmp / "qa", "extractive-qa", max_length=64)
    srv = start_server(tmp, [art.path], names=["qa"])
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()


@pytest.fixture(scope="module")
def expected(server):
    from deploylm.evaluation import predict

    return predict(server.artifacts[0], ITEMS)  # in-process, no server


def test_v1_predict_answers_like_predict_in_process(server, expected):
    with server.client() as c:
        got = c.post("/v1/models/qa/predict", json={"inputs": ITEMS})
    assert got.status_code == 200, got.text
    preds = got.json()["predictions"]
    assert [(p["answer"], p["start"], p["end"]) for p in preds] == \
        [(p["answer"], p["start"], p["end"]) for p in expected]
    np.testing.assert_allclose([p["score"] for p in preds], [p["score"] for p in expected], rtol=1e-5)
    for item, p in zip(ITEMS, preds):
        assert item["context"][p["start"]:p["end"]] == p["answer"]


def _qa_inputs(module):
    q = module.InferInput("QUESTION", [2], "BYTES")
    q.set_data_from_numpy(np.array([i["question"].encode() for i in ITEMS], dtype=object))
    c = module.InferInput("CONTEXT", [2], "BYTES")
    c.set_data_from_numpy(np.array([i["context"].encode() for i in ITEMS], dtype=object))
    return [q, c]


def test_oip_rest_and_grpc_take_question_and_context(server, expected):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    meta = client.get_model_metadata("qa")
    assert [i["name"] for i in meta["inputs"]] == ["QUESTION", "CONTEXT"]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("ANSWER", "BYTES"), ("SCORE", "FP32"), ("START", "INT64"), ("END", "INT64")]
    rest = client.infer("qa", _qa_inputs(httpclient))
    grpc = grpcclient.InferenceServerClient(server.grpc).infer("qa", _qa_inputs(grpcclient))
    for res in (rest, grpc):
        assert [a.decode() for a in res.as_numpy("ANSWER")] == [p["answer"] for p in expected]
        assert res.as_numpy("START").tolist() == [p["start"] for p in expected]
        assert res.as_numpy("END").tolist() == [p["end"] for p in expected]


@pytest.mark.parametrize("item,words", [
    ({"question": "Who?"}, "inputs[1] has no 'context'"),
    ({"question": "Who?", "context": "   "}, "context is missing or empty"),
    ("just a text", "must be an object"),
    ({"question": 3, "context": "Bob."}, "inputs[1].question must be a string"),
])
def test_bad_items_are_400_and_the_server_stays_up(server, item, words):
    with server.client() as c:
        bad = c.post("/v1/models/qa/predict", json={"inputs": [ITEMS[1], item]})
        assert bad.status_code == 400 and words in bad.json()["error"], bad.text
        ok = c.post("/v1/models/qa/predict", json={"inputs": ITEMS[1:]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
