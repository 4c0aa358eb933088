"""The gRPC wrapper's status accounting (review bug: an unexpected exception was recorded as status 200)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from deploylm.errors import RequestError
from deploylm.serving import grpc_server


class _Metrics:
    def __init__(self):
        self.statuses = []

    def observe_request(self, model, version, protocol, status, seconds):
        self.statuses.append((protocol, status))


class _Engine:
    def metric_labels(self, name, version=None):
        return ("cls", "1")


class _Context:
    def __init__(self):
        self.aborted = None

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class _Request:
    model_name, model_version = "cls", ""


class _Service:
    metrics, engine = None, _Engine()

    def check_key(self, context):
        pass

    @grpc_server._rpc
    async def ModelInfer(self, request, context):
        raise self.error


@pytest.mark.parametrize("error,code,status", [
    (KeyError("boom"), grpc.StatusCode.INTERNAL, 500),
    (RequestError("bad input", 400), grpc.StatusCode.INVALID_ARGUMENT, 400),
])
def test_unexpected_and_known_errors_get_their_code_and_metric_status(error, code, status):
    service, context = _Service(), _Context()
    service.metrics, service.error = _Metrics(), error
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(service.ModelInfer(_Request(), context))
    assert context.aborted[0] == code
    assert service.metrics.statuses == [("grpc", status)]


def test_every_status_the_server_answers_has_one_grpc_code_and_retry_advice():
    from deploylm.serving import status

    assert status.grpc_code(404) == grpc.StatusCode.NOT_FOUND
    assert status.grpc_code(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.grpc_code(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert status.grpc_code(502) == grpc.StatusCode.INTERNAL  # an unlisted server error is still a server error
    assert status.grpc_code(418) == grpc.StatusCode.UNKNOWN
    assert status.http_headers(429) == {"Retry-After": "1"} and status.http_headers(503) == {"Retry-After": "1"}
    assert status.http_headers(400) is None and status.http_headers(504) is None
    assert status.http_status(RequestError("x", 413)) == 413 and status.http_status(KeyError("k")) == 500
    assert status.message(KeyError("k")) == "Internal error: KeyError: 'k'"
