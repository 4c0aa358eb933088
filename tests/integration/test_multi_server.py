"""`deploylm serve` of a multi-task artifact (tasks/multi.py), real server on 127.0.0.1, real clients: /v1 predict
answers {head: prediction} per text, OIP (tritonclient HTTP and gRPC) one output per head's field, and an output
name the model does not have is a 400."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve import start_server, stop_server

pytestmark = pytest.mark.timeout(240)

HEADS = (("sst2", "classification", ("negative", "positive")),
         ("topic", "classification", ("World", "Sports", "Business", "Sci/Tech")),
         ("conll2003", "token-classification", ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")))
TEXTS = ["John Smith flew to Paris on Monday .", "a dull and tedious mess"]
OUTPUTS = {"SST2_LABEL", "SST2_SCORE", "TOPIC_LABEL", "TOPIC_SCORE", "CONLL2003_ENTITIES"}


def build_tiny_multi(out: Path):
    """A multi-task artifact over a random 2-layer BERT with random heads (large enough to decide)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from conftest import minilm_dir
    from deploylm.artifacts import create_artifact
    from deploylm.tasks.multi import HeadSpec, MultiHeadModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
    heads = [HeadSpec(n, t, n, labels) for n, t, labels in HEADS]
    model = MultiHeadModel(BertModel(cfg).eval(), heads).eval()
    with torch.no_grad():
        for layer in model.heads.values():
            layer.weight.normal_(std=2.0)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return create_artifact(out, write, stage="finetune", config={"tiny": True}, parent=None, task="multi",
                           labels=[f"{n}:{l}" for n, _, ls in HEADS for l in ls], max_length=64)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi-serve")
    art = build_tiny_multi(tmp / "multi")
    srv = start_server(tmp, [art.path], names=["multi"])
    yield srv, art
    assert stop_server(srv) == 0, srv.log.read_text()


def test_v1_predict_answers_every_head_per_text(server):
    from deploylm.evaluation import predict

    srv, art = server
    with srv.client() as c:
        r = c.post("/v1/models/multi/predict", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [list(p) for p in preds] == [["sst2", "topic", "conll2003"]] * 2
    want = predict(art, TEXTS)  # the library's own path (Task.predict), not the server's batcher
    for got, ref in zip(preds, want):
        assert got["sst2"]["label"] == ref["sst2"]["label"] and got["topic"]["label"] == ref["topic"]["label"]
        assert got["sst2"]["score"] == pytest.approx(ref["sst2"]["score"], abs=1e-5)
        assert got["conll2003"]["tags"] == ref["conll2003"]["tags"]
        assert [e["text"] for e in got["conll2003"]["entities"]] == [e["text"] for e in ref["conll2003"]["entities"]]


def test_oip_http_and_grpc_give_one_output_per_head(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    srv, _ = server
    meta = httpclient.InferenceServerClient(srv.http.removeprefix("http://")).get_model_metadata("multi")
    assert {o["name"] for o in meta["outputs"]} == OUTPUTS
    with srv.client() as c:
        ref = c.post("/v1/models/multi/predict", json={"inputs": TEXTS}).json()["predictions"]
    for client, mod in ((httpclient.InferenceServerClient(srv.http.removeprefix("http://")), httpclient),
                        (grpcclient.InferenceServerClient(srv.grpc), grpcclient)):
        inp = mod.InferInput("TEXT", [2], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
        res = client.infer("multi", [inp])
        assert [x.decode() for x in res.as_numpy("SST2_LABEL")] == [p["sst2"]["label"] for p in ref]
        assert [x.decode() for x in res.as_numpy("TOPIC_LABEL")] == [p["topic"]["label"] for p in ref]
        np.testing.assert_allclose(res.as_numpy("SST2_SCORE"), [p["sst2"]["score"] for p in ref], rtol=1e-5)
        ents = [json.loads(x) for x in res.as_numpy("CONLL2003_ENTITIES")]
        assert ents == [p["conll2003"]["entities"] for p in ref]
        client.close()


def test_an_output_the_model_lacks_is_a_400(server):
    srv, _ = server
    body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hello"]}],
            "outputs": [{"name": "LABEL"}]}  # a single-task name: this model's are per head (SST2_LABEL)
    r = httpx.post(f"{srv.http}/v2/models/multi/infer", json=body, timeout=30)
    assert r.status_code == 400 and "LABEL" in r.text
    body["outputs"] = [{"name": "SST2_LABEL"}]
    r = httpx.post(f"{srv.http}/v2/models/multi/infer", json=body, timeout=30)
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["SST2_LABEL"]
