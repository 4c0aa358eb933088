"""OpenAI's POST /v1/embeddings for served sentence-embedding models.

A transport like /v1 predict: the body's texts go through engine.submit (dynamic batching, deadline, limits,
metrics, dropped when the client disconnects), the model's task turns its predictions into vectors
(Task.embedding_vectors), and they are answered in OpenAI's `list` of `embedding` objects, as numbers or as
base64 of little-endian float32 (what the `openai` client asks for by default). Errors are OpenAI's error
body, through the route class of openai_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import re

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import RequestError
from . import openai_schemas as S
from .openai_api import ParamError, _until_disconnect

_ITEM = re.compile(r"^inputs(\[\d+\])")  # the engine's checks name items as /v1 predict does


def _embedder(engine, name: str):
    try:
        return engine.require_embedder(name)
    except RequestError as exc:
        code = "model_not_found" if exc.status == 404 else None
        raise ParamError(str(exc), "model", exc.status, code) from None


def _texts(value, max_inputs: int) -> list[str]:
    """`input` -> the texts to embed; token ids, empty texts and too many texts are refused."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise ParamError("input is empty: send a text or a list of texts.", "input")
    if not all(isinstance(t, str) for t in texts):
        raise ParamError("input holds token ids; this server embeds texts only (its own tokenizer reads them): "
                         "send a string or a list of strings.", "input")
    if len(texts) > max_inputs:
        raise ParamError(f"input holds {len(texts)} texts; the limit is {max_inputs} per request (--max-inputs). "
                         "Split the request.", "input")
    for i, t in enumerate(texts):
        if not t:
            raise ParamError(f"input[{i}] is an empty string; every text needs at least one character.",
                             f"input[{i}]" if not isinstance(value, str) else "input")
    return texts


def _check_dimensions(asked: int | None, model_dims: int, model_name: str) -> None:
    if asked is None or asked == model_dims or model_dims < 0:
        return
    raise ParamError(f"dimensions {asked} is not supported by model '{model_name}': it answers {model_dims}-"
                     "dimensional vectors, and this server does not truncate them (a cut sentence-transformers "
                     f"vector is no longer normalised, so its cosine similarities are wrong). Leave dimensions out "
                     f"or send {model_dims}.", "dimensions")


async def _submit(engine, model, texts: list[str], request: Request, usage: dict, one: bool) -> list:
    """engine.submit, dropped unrun when the client disconnects; its 400s name OpenAI's `input` (`one`: the
    request sent a single string, not a list)."""
    watch = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        return await engine.submit(model.name, texts, gone=watch, version=model.version, usage=usage)
    except RequestError as exc:
        if exc.status != 400:
            raise
        message = _ITEM.sub("input" if one else r"input\1", str(exc))
        found = re.match(r"^input(\[\d+\])?", message)
        raise ParamError(message, found.group(0) if found else None) from None
    finally:
        watch.cancel()


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def embeddings(engine, body: S.EmbeddingRequest, request: Request) -> JSONResponse:
    model = _embedder(engine, body.model)
    texts = _texts(body.input, engine.limits.max_inputs)
    task = model.task
    dims = int((model.output_shapes.get(task.embedding_output) or (-1,))[-1])
    _check_dimensions(body.dimensions, dims, model.name)
    usage: dict = {}
    one = isinstance(body.input, str)
    vectors = task.embedding_vectors(await _submit(engine, model, texts, request, usage, one))
    _check_dimensions(body.dimensions, vectors.shape[1], model.name)  # a model whose width was not probed
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    tokens = usage.get("prompt_tokens", 0)
    return JSONResponse({"object": "list", "data": data, "model": model.name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
