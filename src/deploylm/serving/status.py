"""Errors to wire status, in one place: every transport (REST, OIP v2, the OpenAI routes, gRPC) asks here.

A RequestError carries the HTTP status it means; anything else that escapes a handler is a bug in deploylm and
answers 500 (gRPC INTERNAL), and the server keeps serving. The body's shape is each protocol's own (OIP's
{"error": message}, OpenAI's error object, a gRPC status message); the status and the retry advice are not.
"""

from __future__ import annotations

from ..errors import RequestError

CLIENT_GONE = 499  # nginx's convention for "client closed the request"; never sent, only counted
RETRY_AFTER_S = 1  # what a refused client is told to wait: queues move every batch or engine step
RETRYABLE = (429, 503)

# HTTP status -> grpc.StatusCode name (grpc is imported only by the gRPC transport, see grpc_code)
GRPC_CODES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_status(exc: BaseException) -> int:
    return exc.status if isinstance(exc, RequestError) else 500


def message(exc: BaseException) -> str:
    """What the client reads: the RequestError's own words, or the bug's type and text for anything else."""
    return str(exc) if isinstance(exc, RequestError) else f"Internal error: {type(exc).__name__}: {exc}"


def grpc_code(status: int):
    import grpc

    return getattr(grpc.StatusCode, GRPC_CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"))


def http_headers(status: int) -> dict[str, str] | None:
    """Retry-After on every answer that asks the client to come back (429 queue full, 503 not ready)."""
    return {"Retry-After": str(RETRY_AFTER_S)} if status in RETRYABLE else None
