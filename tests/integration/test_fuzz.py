"""Property-based fuzzing of the real `deploylm serve` process with schemathesis: every operation of the server's
own OpenAPI document, every check schemathesis has (server errors, status codes, content types, response
schemas and headers the document declares, negative data rejected, positive data accepted), a bounded number
of examples per operation. After it: the server is healthy, answers a good request, and logged no traceback."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_serve import AUTH, KEY, start_server, stop_server
from tiny_decoders import make_tiny_decoder

pytestmark = pytest.mark.timeout(600)
EXAMPLES = 25  # per operation and mode: the whole file stays under a minute on two cores


@pytest.fixture(scope="module")
def fuzzed(tiny_cls, tiny_ner, tmp_path_factory):
    from deploylm.models.importer import import_decoder

    tmp = tmp_path_factory.mktemp("fuzz")
    decoder = import_decoder(str(make_tiny_decoder("llama", tmp / "src")), tmp / "llama")
    (tmp / "key.txt").write_text(KEY + "\n")
    srv = start_server(tmp, [tiny_cls.path, tiny_ner.path, decoder.path], "--api-key-file", str(tmp / "key.txt"),
                       "--max-queue", "8", names=["cls", "ner", "tiny"])
    yield srv
    log = srv.log.read_text()
    assert stop_server(srv) == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def api(fuzzed):
    return schemathesis.openapi.from_url(f"{fuzzed.http}/openapi.json")


def _fuzz(operation, mode, base_url: str) -> None:
    from schemathesis import GenerationMode

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case):
        case.call_and_validate(base_url=base_url, headers=dict(AUTH), timeout=60)

    run()


# schemathesis' pytest plugin (schema.parametrize) needs the schema at collection time, before the server of this
# module exists; its Hypothesis strategies are driven directly instead, every operation, both generation modes.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_survives_the_fuzzer(api, fuzzed, mode):
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]  # the document lists what the server routes
    failures = {}
    for operation in operations:
        if mode == "negative" and "{" not in operation.path and operation.method.upper() == "GET":
            continue  # no parameters and no body: nothing to make invalid
        try:
            _fuzz(operation, mode, fuzzed.http)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_the_server_is_healthy_after_the_fuzzer(fuzzed, api):
    import httpx

    with httpx.Client(base_url=fuzzed.http, headers=dict(AUTH), timeout=60) as c:
        assert c.get("/v2/health/ready").status_code == 200
        r = c.post("/v1/models/cls/predict", json={"inputs": ["still healthy"]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"]
        g = c.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 3})
        assert g.status_code == 200 and g.json()["usage"]["completion_tokens"] == 3
