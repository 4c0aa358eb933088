"""gRPC transport: the Open Inference Protocol v2 `inference.GRPCInferenceService` (grpc.aio).

Runs on the same event loop and the same Engine as the REST app. Thin: protobuf tensors -> texts -> the task's
inputs -> engine.submit -> the task's output arrays -> protobuf tensors (raw_output_contents, any rank).
RequestError.status (HTTP) maps to a gRPC code in serving/status.py.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import time

import grpc

from .. import __version__
from ..errors import ConfigError, RequestError
from . import oip
from .status import CLIENT_GONE, grpc_code, http_status, message
from .proto import open_inference_pb2 as pb
from .proto import open_inference_pb2_grpc as pb_grpc

_OPEN_METHODS = {"ServerLive", "ServerReady"}  # health: no API key


def _rpc(method):
    """Auth, error mapping and metrics around one servicer method."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self, request, context):
        start, status = time.perf_counter(), 200
        try:
            if name not in _OPEN_METHODS:
                self.check_key(context)
            return await method(self, request, context)
        except RequestError as exc:
            status = exc.status
            await context.abort(grpc_code(status), str(exc))
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        except grpc.aio.AbortError:  # the method aborted the call itself, with its own code
            status = 500
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: INTERNAL to the client, 500 in the metrics, keep serving
            status = http_status(exc)
            await context.abort(grpc_code(status), message(exc))
        finally:
            if name not in _OPEN_METHODS:
                asked = getattr(request, "model_name", "") or getattr(request, "name", "")
                version = getattr(request, "model_version", "") or getattr(request, "version", "")
                self.metrics.observe_request(*self.engine.metric_labels(asked, version or None), "grpc", status,
                                             time.perf_counter() - start)

    return wrapper


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine, metrics, limits):
        self.engine, self.metrics = engine, metrics
        self.key = limits.api_key.encode() if limits.api_key else None

    def check_key(self, context) -> None:
        if self.key is None:
            return
        header = dict(context.invocation_metadata()).get("authorization", "")
        token = header[7:].encode() if header[:7].lower() == "bearer " else b""
        if not hmac.compare_digest(token, self.key):
            raise RequestError("Missing or wrong API key: send metadata 'authorization: Bearer <key>'.", 401)

    @_rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.engine.ready)

    @_rpc
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="deploylm", version=__version__, extensions=[])

    @_rpc
    async def ModelReady(self, request, context):
        model = self.engine.get(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model.ready)

    @_rpc
    async def ModelMetadata(self, request, context):
        model = self.engine.get(request.name, request.version or None)
        meta = oip.model_metadata(model, [m.version for m in self.engine.versions(model.name)])
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        inputs=[tensor(**t) for t in meta["inputs"]],
                                        outputs=[tensor(**t) for t in meta["outputs"]])

    @_rpc
    async def ModelInfer(self, request, context):
        model = self.engine.get(request.model_name, request.model_version or None)
        items = model.task.inputs_from_oip(_texts(request, model.task.oip_inputs))
        remaining = context.time_remaining()  # the client's gRPC deadline, if it set one, caps ours
        timeout = None if remaining is None else min(remaining, self.engine.timeout_s)
        preds = await self.engine.submit(model.name, items, timeout_s=timeout, request_id=request.id or None,
                                         version=model.version)
        values = oip.select_outputs(oip.output_values(model, preds), [o.name for o in request.outputs])
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name, arr in values.items():
            response.outputs.add(name=name, datatype=oip.datatype_of(arr), shape=oip.shape_of(arr))
            response.raw_output_contents.append(oip.to_raw(arr))
        return response


def _texts(request, specs) -> dict[str, list[str]]:
    """The request's input tensors, checked against the model's (its task's oip_inputs) -> texts by name."""
    inputs = list(request.inputs)
    counts = oip.check_inputs([(t.name, t.datatype, list(t.shape)) for t in inputs], specs)
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise RequestError(f"Expected one raw_input_contents entry per input tensor ({len(inputs)}), got {len(raw)}.",
                           400)
    texts = {}
    for k, (tensor, count) in enumerate(zip(inputs, counts)):
        elements = (oip.split_bytes_tensor(raw[k], count, tensor.name) if raw
                    else list(tensor.contents.bytes_contents))
        texts[tensor.name] = oip.texts_from_elements(elements, count, tensor.name)
    return texts


def create_grpc_server(engine, metrics, limits, host: str, port: int):
    """A started-later grpc.aio server bound to host:port; returns (server, bound port)."""
    # Messages beyond the body limit are refused by gRPC itself (RESOURCE_EXHAUSTED), like 413 over HTTP.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limits.max_body_bytes),
                                      ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(engine, metrics, limits), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"Cannot bind gRPC to {host}:{port} (port in use?). Choose another --grpc-port.")
    return server, bound
