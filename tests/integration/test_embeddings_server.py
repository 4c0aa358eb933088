"""Sentence embeddings on the real `deploylm serve` process (127.0.0.1, ephemeral ports): OpenAI's /v1/embeddings
through the unmodified `openai` client (float, base64, the client's own default), /v1 predict, and OIP's EMBEDDING
FP32 [N, D] through tritonclient.http (JSON and binary) and tritonclient.grpc. Expected vectors come from
deploylm.evaluation.predict on the same artifact (torch in this process), token counts from the tokenizer."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from test_serve import start_server, stop_server
from tiny_encoders import tiny_encoder_dir

pytestmark = pytest.mark.timeout(240)

TEXTS = ["A man is playing a guitar.", "short", "caf\u00e9 na\u00efve \u2013 a much longer sentence than the others"]
DIMS = 32
MAX_INPUTS = 4


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    from deploylm.models.embedding_import import import_embedder

    src = tiny_encoder_dir(tmp_path_factory.mktemp("emb-src") / "enc", seed=3)
    return import_embedder(str(src), tmp_path_factory.mktemp("emb") / "art", max_length=64)


@pytest.fixture(scope="module")
def server(emb, tiny_cls, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("serve-emb"), [emb.path, tiny_cls.path], "--max-inputs",
                       str(MAX_INPUTS), names=["emb", "cls"])
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()


@pytest.fixture(scope="module")
def expected(emb) -> np.ndarray:
    from deploylm.evaluation import predict

    return np.array([p["embedding"] for p in predict(emb, TEXTS)], dtype=np.float32)


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http}/v1", api_key="no-key-needed", max_retries=0, timeout=30)


def test_openai_client_float_base64_and_default_agree_with_torch(server, emb, expected):
    from transformers import AutoTokenizer

    c = client(server)
    floats = c.embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    assert floats.object == "list" and floats.model == "emb"
    assert [d.index for d in floats.data] == [0, 1, 2] and all(d.object == "embedding" for d in floats.data)
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert got.shape == (len(TEXTS), DIMS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(emb.path)
    tokens = sum(len(tok(t)["input_ids"]) for t in TEXTS)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens

    b64 = c.embeddings.create(model="emb", input=TEXTS, encoding_format="base64")
    raw = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data])
    np.testing.assert_array_equal(raw, got)  # the same float32 numbers, bit for bit
    default = c.embeddings.create(model="emb", input=TEXTS[0])  # the client asks for base64 and decodes it
    assert len(default.data) == 1
    # alone, unpadded: the same vector up to float rounding of a different batch shape
    np.testing.assert_allclose(np.array(default.data[0].embedding, dtype=np.float32), got[0], atol=1e-6)
    same = c.embeddings.create(model="emb", input=TEXTS[:1], dimensions=DIMS, user="someone",
                               encoding_format="float")
    # the same single text as `default`: the same numbers, whichever way they travelled
    np.testing.assert_array_equal(np.array(same.data[0].embedding, dtype=np.float32),
                                  np.array(default.data[0].embedding, dtype=np.float32))


BAD = [
    ("token ids", dict(input=[101, 2023, 102]), "input", "token ids"),
    ("token id lists", dict(input=[[101, 102], [101, 7, 102]]), "input", "token ids"),
    ("empty string", dict(input=""), "input", "empty string"),
    ("empty string in a list", dict(input=["ok", ""]), "input[1]", "empty string"),
    ("empty list", dict(input=[]), "input", "empty"),
    ("too many", dict(input=["a"] * (MAX_INPUTS + 1)), "input", f"the limit is {MAX_INPUTS}"),
    ("too long", dict(input=["ok", "x" * 10_001]), "input[1]", "10001 characters"),
    ("one too long", dict(input="x" * 10_001), "input", "input has 10001 characters"),
    ("dimensions", dict(input="a", dimensions=DIMS // 2), "dimensions", f"{DIMS}-dimensional"),
    ("not an embedding model", dict(model="cls", input="a"), "model", "Embedding models served: emb"),
]


@pytest.mark.parametrize("kw, param, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_are_400_in_openai_shape(server, kw, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        client(server).embeddings.create(**{"model": "emb", "encoding_format": "float", **kw})
    err = info.value
    assert err.status_code == 400 and err.body["type"] == "invalid_request_error", err.body
    assert err.body["param"] == param and words in err.body["message"], err.body
    if param == "dimensions":
        assert "truncate" in err.body["message"]


def test_unknown_model_is_404_and_bad_encoding_is_400(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).embeddings.create(model="nope", input="a")
    assert info.value.body["code"] == "model_not_found" and "Served models" in info.value.body["message"]
    with httpx.Client(base_url=server.http, timeout=30) as c:
        r = c.post("/v1/embeddings", json={"model": "emb", "input": "a", "encoding_format": "int8"})
        ok = c.post("/v1/embeddings", json={"model": "emb", "input": "still healthy"})
        schema = c.get("/openapi.json").json()
    assert r.status_code == 400 and r.json()["error"]["param"] == "encoding_format", r.text
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == DIMS
    doc = schema["paths"]["/v1/embeddings"]["post"]
    assert doc["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("EmbeddingRequest")
    assert "message" in str(doc["responses"]["400"]) and "text/event-stream" not in doc["responses"]["200"]["content"]


def test_v1_predict_answers_embedding_and_dimensions(server, expected):
    with httpx.Client(base_url=server.http, timeout=30) as c:
        preds = c.post("/v1/models/emb/predict", json={"inputs": TEXTS}).json()["predictions"]
        listed = {m["id"]: m["task"] for m in c.get("/v1/models").json()["data"]}
    assert [p["dimensions"] for p in preds] == [DIMS] * len(TEXTS)
    np.testing.assert_allclose(np.array([p["embedding"] for p in preds]), expected, atol=1e-5)
    assert listed == {"emb": "feature-extraction", "cls": "classification"}


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_embedding_is_fp32_n_by_d(server, expected, binary):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    meta = c.get_model_metadata("emb")
    assert meta["outputs"] == [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, DIMS]}]
    inp = httpclient.InferInput("TEXT", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object), binary_data=binary)
    res = c.infer("emb", [inp], outputs=[httpclient.InferRequestedOutput("EMBEDDING", binary_data=binary)])
    out = res.get_output("EMBEDDING")
    assert out["datatype"] == "FP32" and out["shape"] == [len(TEXTS), DIMS]
    got = res.as_numpy("EMBEDDING")
    assert got.shape == (len(TEXTS), DIMS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    c.close()


def test_tritonclient_grpc_embedding_is_fp32_n_by_d(server, expected):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc)
    meta = c.get_model_metadata("emb")
    assert meta.outputs[0].name == "EMBEDDING" and list(meta.outputs[0].shape) == [-1, DIMS]
    inp = grpcclient.InferInput("TEXT", [2], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS[:2]], dtype=object))
    res = c.infer("emb", [inp])
    assert list(res.get_output("EMBEDDING").shape) == [2, DIMS]
    np.testing.assert_allclose(res.as_numpy("EMBEDDING"), expected[:2], atol=1e-5)
    c.close()
