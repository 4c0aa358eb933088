"""REST transport (FastAPI): task endpoints (/v1), Open Inference Protocol v2 (/v2), /metrics.

Thin by design: parse the wire format, call engine.submit, shape the answer. Every error is a
RequestError whose .status is the HTTP status (serving/status.py), answered as {"error": message}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from typing import Any, List

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import RequestError
from . import oip
from .status import CLIENT_GONE, http_headers

PREDICT_PATH = re.compile(r"/v1/models/([^/]+)(?:/versions/([^/]+))?/predict")  # matched whole, see Guard
OPEN_PATHS = ("/v2/health/", "/metrics")  # no API key: probes and scrapers
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")  # the schema holds no data and the browser sends no key


class PredictRequest(BaseModel):
    inputs: List[Any] = Field(..., description="Texts to classify, tag or embed (strings), at most --max-inputs.",
                              examples=[["a gripping, beautifully acted film"]])


def _error(status: int, text: str) -> JSONResponse:
    """The OIP/task routes' error body; status and headers as serving/status.py says."""
    return JSONResponse({"error": text}, status_code=status, headers=http_headers(status))


class Guard:
    """Pure ASGI middleware, outermost: metrics for every answer, API key, body size limit.

    Written by hand because the body limit must stop reading at 1 MiB (Starlette/uvicorn have no such
    option) and the metrics must see statuses produced here (401, 413) as well as the app's."""

    def __init__(self, app, engine, metrics, limits):
        self.app, self.engine, self.metrics, self.limits = app, engine, metrics, limits
        self.key = limits.api_key.encode() if limits.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, start, status = scope["path"], time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            response = self._refuse(scope)
            if response is None:
                receive, response = await self._read_limited(scope, receive)
            predict = PREDICT_PATH.fullmatch(path) if response is None and scope["method"] == "POST" else None
            if predict:  # the hot path answered here: see predict_response
                response = await predict_response(self.engine, predict.group(1), predict.group(2),
                                                  (await receive())["body"], receive)
            if response is not None:
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self._observe(path, status[0], time.perf_counter() - start)

    def _refuse(self, scope) -> JSONResponse | None:
        path = scope["path"]
        if self.key is None or path.startswith(OPEN_PATHS) or path in DOCS_PATHS:
            return None
        header = dict(scope["headers"]).get(b"authorization", b"")
        token = header[7:] if header[:7].lower() == b"bearer " else b""
        if not hmac.compare_digest(token, self.key):
            return JSONResponse({"error": "Missing or wrong API key: send 'Authorization: Bearer <key>'."},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _read_limited(self, scope, receive):
        """Read the whole body (the endpoints all need it) up to the limit, then replay it."""
        limit = self.limits.max_body_bytes
        too_big = _error(413, f"Request body exceeds {limit} bytes (--max-body-bytes). Send fewer or shorter texts.")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return receive, too_big
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive, Response(status_code=CLIENT_GONE)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return receive, too_big
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for http.disconnect

        return replay, None

    def _observe(self, path: str, status: int, seconds: float) -> None:
        if path.startswith(OPEN_PATHS):
            return
        parts = path.split("/")
        name = parts[3] if len(parts) > 3 and parts[2] == "models" else ""
        version = parts[5] if len(parts) > 5 and parts[4] == "versions" else None
        self.metrics.observe_request(*self.engine.metric_labels(name, version), "http", status, seconds)


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def predict_response(engine, name: str, version: str | None, raw_body: bytes, receive) -> Response:
    """POST /v1/models/{name}/predict. The Guard middleware calls this directly rather than through
    FastAPI's router (the route below, kept for the OpenAPI docs, calls the same function): a py-spy
    profile of `deploylm serve` at 32 clients showed routing, dependency solving and exception wrapping
    as a large share of the event loop's time per request, time taken from the runner's cores."""
    try:
        model = engine.get(name, version)  # unknown model: 404 before looking at the body
        body = _parse_json(raw_body)  # any content type: `curl -d` sends form-urlencoded
        if not isinstance(body, dict) or "inputs" not in body:
            raise RequestError('Request must be a JSON object like {"inputs": ["a text", ...]}.', 400)
        preds = await _submit(receive, engine, model, body["inputs"])
    except RequestError as exc:
        return _error(exc.status, str(exc))
    return _json({"model": model.name, "version": model.version, "predictions": preds})


async def _submit(receive, engine, model, items: Any) -> list:
    """engine.submit, dropped unrun as soon as the client disconnects."""
    watch = asyncio.ensure_future(_until_disconnect(receive))
    try:
        return await engine.submit(model.name, items, gone=watch, version=model.version)
    finally:
        watch.cancel()


def _json(doc: Any) -> Response:
    """Serialised here: FastAPI's jsonable_encoder would walk every value of these plain dicts again."""
    return Response(json.dumps(doc, ensure_ascii=False).encode(), media_type="application/json")


def create_app(engine, metrics, limits, generation_timeout_s: float = 600.0) -> FastAPI:
    from .openai_api import register_openai_routes

    app = FastAPI(title="deploylm", version=__version__,
                  description="Task endpoints (/v1), the OpenAI API for text-generation models (/v1/completions, "
                              "/v1/chat/completions) and sentence-embedding models (/v1/embeddings), and the Open "
                              "Inference Protocol v2 (/v2) for deploylm models.")
    app.add_middleware(Guard, engine=engine, metrics=metrics, limits=limits)

    @app.exception_handler(RequestError)
    async def request_error(_request, exc: RequestError):
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(400, f"Invalid request at '{where}': {first.get('msg', 'malformed body')}.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405 (RFC 9110 requires it)
        return response

    # ---- task endpoints --------------------------------------------------------------------
    @app.get("/v1/models", tags=["v1"], summary="Served models (OpenAI list format)")
    async def list_models():
        """One entry per served version: id NAME for the latest (what NAME addresses), NAME:VERSION for the
        others (addressable as such too)."""
        data = []
        for name in engine.names():
            *older, latest = engine.versions(name)
            data += [{"id": name if m is latest else m.key, "object": "model", "created": m.created,
                      "owned_by": "deploylm", "version": m.version, "task": m.task.name, "ready": m.ready,
                      "max_model_len": m.max_length} for m in [latest, *reversed(older)]]
        return {"object": "list", "data": data}

    predict_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": PredictRequest.model_json_schema()}}}}

    @app.post("/v1/models/{name}/predict", tags=["v1"], openapi_extra=predict_body,
              summary="Labels + scores, entity spans or an embedding, per text (latest version)")
    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["v1"], openapi_extra=predict_body,
              summary="Labels + scores, entity spans or an embedding, per text (one version)")
    async def predict(name: str, request: Request, version: str | None = None):
        return await predict_response(engine, name, version, await request.body(), request.receive)

    # ---- Open Inference Protocol v2 --------------------------------------------------------
    @app.get("/v2", tags=["v2"])
    async def server_metadata():
        return {"name": "deploylm", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live", tags=["v2"])
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready():
        return JSONResponse({"ready": engine.ready}, status_code=200 if engine.ready else 503)

    @app.get("/v2/models/{name}", tags=["v2"])
    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], include_in_schema=False)
    async def model_metadata(name: str, version: str | None = None):
        model = engine.get(name, version)
        return oip.model_metadata(model, [m.version for m in engine.versions(model.name)])

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], include_in_schema=False)
    async def model_ready(name: str, version: str | None = None):
        model = engine.get(name, version)
        return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=_INFER_SCHEMA)
    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], include_in_schema=False)
    async def infer(name: str, request: Request, version: str | None = None):
        model = engine.get(name, version)
        header, texts, requested, binary_out = _parse_infer(await request.body(), request.headers,
                                                            model.task.oip_inputs)
        preds = await _submit(request.receive, engine, model, model.task.inputs_from_oip(texts))
        values = oip.select_outputs(oip.output_values(model, preds), requested)
        return _infer_response(model, header.get("id"), values, binary_out)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus_metrics():
        for m in engine.models.values():  # queue depth as of this scrape
            if m.batcher is not None:
                metrics.queue_depth.labels(m.name, m.version).set(m.batcher.queue_depth())
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    register_openai_routes(app, engine, limits, generation_timeout_s)
    _document(app, limits)
    return app


def _document(app: FastAPI, limits) -> None:
    from .openapi_doc import complete_openapi

    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = complete_openapi(generate, limits)
        return app.openapi_schema

    app.openapi = openapi


_INFER_SCHEMA = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"],
    "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": {"type": "object"}},
                   "outputs": {"type": "array", "items": {"type": "object"}}},
    "example": {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a lovely film"]}]}}}}}}


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise RequestError(f"Request body is not valid UTF-8 ({exc.reason} at byte {exc.start}).", 400) from None
    except ValueError as exc:
        raise RequestError(f"Request body is not valid JSON ({exc}).", 400) from None


def _parse_infer(body: bytes, headers, specs) -> tuple[dict, dict[str, list[str]], list[str], dict[str, bool]]:
    """OIP JSON (optionally with Triton's binary tensor extension) -> (header, texts by input name, requested
    outputs, binary?). `specs`: the model's input tensors (its task's oip_inputs)."""
    json_len = headers.get("inference-header-content-length")
    if json_len is not None and (not json_len.isdigit() or int(json_len) > len(body)):
        raise RequestError(f"Inference-Header-Content-Length {json_len!r} does not fit the {len(body)}-byte body.",
                           400)
    cut = int(json_len) if json_len is not None else len(body)
    header = _parse_json(body[:cut])
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError("Request must be a JSON object with an 'inputs' list of tensors.", 400)
    tensors = [t if isinstance(t, dict) else {} for t in header["inputs"]]
    counts = oip.check_inputs([(t.get("name"), t.get("datatype"), t.get("shape")) for t in tensors], specs)
    texts, offset = {}, cut  # binary tensors follow the header in the order of their inputs
    for tensor, count in zip(tensors, counts):
        elements, offset = _elements(tensor, count, body, offset)
        texts[tensor["name"]] = oip.texts_from_elements(elements, count, tensor["name"])
    outputs = header.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise RequestError("'outputs' must be a list of objects with a 'name'.", 400)
    default_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
    binary = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", default_binary)) for o in outputs}
    binary["*"] = default_binary
    return header, texts, [o["name"] for o in outputs], binary


def _elements(tensor: dict, count: int, body: bytes, offset: int) -> tuple[list, int]:
    """One input tensor's elements, from its JSON `data` or from the body at `offset`; -> (elements, next offset)."""
    name, params = tensor["name"], tensor.get("parameters") or {}
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(body) - offset:
            raise RequestError(f"Input parameter binary_data_size must be an integer byte count from 0 to the "
                               f"{len(body) - offset} bytes after the JSON header; got {size!r}.", 400)
        return oip.split_bytes_tensor(body[offset: offset + size], count, name), offset + size
    data = tensor.get("data")
    if not isinstance(data, list):
        raise RequestError(f"Input '{name}' needs a 'data' list (or binary data).", 400)
    return [d[0] if isinstance(d, list) and len(d) == 1 else d for d in data], offset  # [N, 1] nested form


def _infer_response(model, request_id, values, binary_out: dict[str, bool]) -> Response:
    outputs, blobs = [], []
    for name, arr in values.items():
        entry = {"name": name, "datatype": oip.datatype_of(arr), "shape": oip.shape_of(arr)}
        if binary_out.get(name, binary_out["*"]):
            raw = oip.to_raw(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = oip.to_json_data(arr)
        outputs.append(entry)
    doc = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request_id is not None:
        doc["id"] = request_id
    head = json.dumps(doc).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
