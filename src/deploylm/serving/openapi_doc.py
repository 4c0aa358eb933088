"""The server's OpenAPI document, made true to what the server answers (schemathesis checks it in the suite).

FastAPI documents what it can see: each route's 200 and a 422 for its own validation. This server answers
validation errors with 400 (every transport maps errors in serving/status.py), refuses in its Guard middleware
before any route runs (401 API key, 413 body size), refuses load with 429/503 + Retry-After, and gives up at a
deadline with 504; `/metrics` is Prometheus text, not JSON; predict bodies have limits (`Limits`). This module
adds all of that to the generated document, in one place, so the document and the behaviour change together.
"""

from __future__ import annotations

from typing import Callable

from .limits import Limits
from .status import RETRYABLE

PLAIN_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}

WHAT = {400: "Invalid request: the message names the field and the limit", 401: "Missing or wrong API key",
        404: "Unknown model or version", 413: "Body larger than --max-body-bytes", 429: "Queue full",
        500: "The model failed on this batch; the server keeps serving", 503: "Model loading or server stopping",
        504: "Past the request's deadline"}
# Which refusals each kind of operation can answer (401 only where the API key applies; see Guard).
MODEL_CALL = (400, 401, 404, 413, 429, 500, 503, 504)
MODEL_LOOKUP = (401, 404)
OPEN_PATHS = ("/v2/health/", "/metrics")


def _error_response(status: int, schema: dict) -> dict:
    out = {"description": WHAT[status], "content": {"application/json": {"schema": schema}}}
    if status in RETRYABLE:
        out["headers"] = RETRY_AFTER
    return out


def _statuses(path: str, method: str) -> tuple[int, ...]:
    if path.startswith(OPEN_PATHS):
        return ()
    if method == "post":
        return MODEL_CALL
    return MODEL_LOOKUP if "{name}" in path else (401,)


def _predict_body(limits: Limits) -> dict:
    text = {"type": "string", "maxLength": limits.max_text_chars}
    return {"type": "object", "required": ["inputs"], "properties": {"inputs": {
        "type": "array", "items": text, "minItems": 1, "maxItems": limits.max_inputs,
        "description": "Texts to classify or tag, at most --max-inputs, each at most --max-text-chars.",
        "examples": [["a gripping, beautifully acted film"]]}}}


def _fix_operation(path: str, method: str, op: dict, limits: Limits) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's validation status; this server answers 400
    openai = "openai" in op.get("tags", ())
    for status in _statuses(path, method):
        # The Guard answers 401/413 before any route runs, in the plain shape, on the OpenAI routes too.
        shape = OPENAI_ERROR if openai and status not in (401, 413) else PLAIN_ERROR
        responses[str(status)] = _error_response(status, shape)
    if openai and not path.endswith("/embeddings"):  # "stream": true answers server-sent events
        responses["200"].setdefault("content", {})["text/event-stream"] = {"schema": {"type": "string"}}
    if path.endswith("/predict"):
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _predict_body(limits)}}}


def _fix_special_paths(paths: dict) -> None:
    metrics = paths.get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"] = {"description": "Prometheus text exposition format",
                                       "content": {"text/plain": {"schema": {"type": "string"}}}}
    ready = {"description": "Not ready (loading or stopping)",
             "content": {"application/json": {"schema": {"type": "object"}}}}
    for path in ("/v2/health/ready", "/v2/models/{name}/ready"):
        if path in paths:
            paths[path]["get"]["responses"]["503"] = ready
    for path, item in paths.items():
        if path.endswith("/infer") and "post" in item:
            item["post"]["responses"]["200"]["content"]["application/octet-stream"] = {
                "schema": {"type": "string", "format": "binary"}}  # binary_data_output: JSON header + raw tensors


def complete_openapi(generate: Callable[[], dict], limits: Limits) -> dict:
    doc = generate()
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            _fix_operation(path, method, op, limits)
    _fix_special_paths(doc.get("paths", {}))
    doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    doc.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    return doc
