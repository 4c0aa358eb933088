"""A relation-classification artifact behind the real `deploylm serve` (127.0.0.1, ephemeral ports): texts tagged
<e1>..</e1> <e2>..</e2> through httpx on /v1 and tritonclient on OIP v2 (LABEL, SCORE); inputs that mark no pair,
or overlapping ones, get a 400 that says what is wrong, and the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from relation_data import RELATION_LABELS, build_tiny_relation_artifact
from test_serve import start_server, stop_server

pytestmark = pytest.mark.timeout(240)

TEXTS = ["<e1>John Smith</e1> was born in <e2>Oslo</e2> .", "<e2>Acme Corp</e2> hired <e1>Li Wei</e1>"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-rel")
    art = build_tiny_relation_artifact(tmp / "rel")
    srv = start_server(tmp, [art.path], names=["rel"])
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()


def test_v1_and_oip_answer_label_and_score(server):
    import tritonclient.http as httpclient

    from deploylm.evaluation import predict

    with server.client() as c:
        got = c.post("/v1/models/rel/predict", json={"inputs": TEXTS})
    assert got.status_code == 200, got.text
    preds = got.json()["predictions"]
    want = predict(server.artifacts[0], TEXTS)  # in-process, no server
    assert [p["label"] for p in preds] == [p["label"] for p in want]
    np.testing.assert_allclose([p["score"] for p in preds], [p["score"] for p in want], rtol=1e-5)
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    meta = client.get_model_metadata("rel")
    assert [o["name"] for o in meta["outputs"]] == ["LABEL", "SCORE"]
    inp = httpclient.InferInput("TEXT", [2], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    res = client.infer("rel", [inp])
    assert [l.decode() for l in res.as_numpy("LABEL")] == [p["label"] for p in want]
    assert all(l.decode() in RELATION_LABELS for l in res.as_numpy("LABEL"))


@pytest.mark.parametrize("text,words", [
    ("John Smith was born in Oslo", "marks no entities"),
    ("<e1>John <e2>Smith</e1> was born in</e2> Oslo", "must not nest or overlap"),
    ("<e1>John</e1> met <e1>Mary</e1>", "exactly one"),
])
def test_bad_pairs_are_400_and_the_server_stays_up(server, text, words):
    with server.client() as c:
        bad = c.post("/v1/models/rel/predict", json={"inputs": [TEXTS[0], text]})
        assert bad.status_code == 400 and words in bad.json()["error"] and "inputs[1]" in bad.json()["error"]
        ok = c.post("/v1/models/rel/predict", json={"inputs": TEXTS[:1]})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] in RELATION_LABELS
