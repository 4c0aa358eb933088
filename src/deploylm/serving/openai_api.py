"""The OpenAI API for served decoders: POST /v1/chat/completions and /v1/completions, stream (SSE) and not
(and the error mapping and route class that /v1/embeddings, in openai_embeddings.py, shares).

A transport only: the body becomes token ids (the chat template lives in tasks/generation.py) and a checked
SamplingParams (generation/params.py), the DecoderEngine runs it, and its GenerationEvents are shaped as OpenAI's
chunks and answers (openai_schemas.py). Each request watches its client: a disconnect, queued or mid-stream,
aborts it in the engine at once (without waiting for Starlette to notice), and so does its deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from contextlib import aclosing
from typing import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import RequestError
from . import openai_schemas as S
from .status import CLIENT_GONE, http_headers

CHAT_PATH, COMPLETIONS_PATH = "/v1/chat/completions", "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"  # sentence-embedding models: openai_embeddings.py
_INLINE_CHARS = 4096  # longer prompts are tokenised in a worker thread, not on the event loop
_FIELDS = {CHAT_PATH: set(S.ChatCompletionRequest.model_fields) | {"prompt"},
           COMPLETIONS_PATH: set(S.CompletionRequest.model_fields),
           EMBEDDINGS_PATH: set(S.EmbeddingRequest.model_fields)}
_PARAM_RENAMES = {CHAT_PATH: {"prompt": "messages"}, COMPLETIONS_PATH: {"top_logprobs": "logprobs"},
                  EMBEDDINGS_PATH: {}}
_PARAM = re.compile(r"^([a-z_]+)((?:\[\d+\]|\.[a-z_]+)*)")
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


class ParamError(RequestError):
    """A RequestError that knows which request parameter it is about (OpenAI's `param`) and its `code`."""

    def __init__(self, message: str, param: str | None, status: int = 400, code: str | None = None):
        super().__init__(message, status)
        self.param, self.code = param, code


# ---- errors: one mapping for these routes ----------------------------------------------------------------------
def error_doc(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape. Only the OpenAI routes answer in it; the rest of the server keeps its own
    {"error": message} (the Guard's 401/413 included, which it sends before any route runs)."""
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", code or {503: "unavailable", 504: "timeout"}.get(status)
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_doc(status, message, param, code), status_code=status, headers=http_headers(status))


def error_response(exc: Exception, path: str) -> JSONResponse:
    if isinstance(exc, RequestValidationError):
        return openai_error(400, *_validation_message(exc))
    if isinstance(exc, ParamError):
        return openai_error(exc.status, str(exc), exc.param, exc.code)
    return openai_error(exc.status, str(exc), _param_of(str(exc), path))


def _param_of(message: str, path: str) -> str | None:
    """Messages of the shared checks start with the parameter they are about ("top_p must be ...",
    "messages[2].role ..."): that is OpenAI's `param`, under its name on this route."""
    found = _PARAM.match(message)
    if not found or found.group(1) not in _FIELDS[path]:
        return None
    return _PARAM_RENAMES[path].get(found.group(1), found.group(1)) + found.group(2)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    parts = [p for p in first.get("loc", ()) if p != "body"]
    param = ""
    for p in parts:  # pydantic names union members ("str", "list[int]") in loc: not parameters
        if isinstance(p, int):
            param += f"[{p}]"
        elif "[" not in str(p) and str(p) not in _UNION_TAGS:
            param += f".{p}" if param else str(p)
    kind, msg = first.get("type", ""), first.get("msg", "malformed body")
    if not param:
        hint = " Send a JSON object with Content-Type: application/json." if kind != "json_invalid" else ""
        return f"Invalid request body: {msg}.{hint}", None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param}': {msg}.", param


class _OpenAIRoute(APIRoute):
    """Maps this router's errors (validation included) to OpenAI's shape before the app's handlers see them."""

    def get_route_handler(self) -> Callable:
        handler, path = super().get_route_handler(), self.path

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestError, RequestValidationError) as exc:
                return error_response(exc, path)
            except StarletteHTTPException as exc:  # FastAPI's own: a body that is not JSON at all
                return openai_error(exc.status_code, f"Request body is not valid JSON ({exc.detail}).")

        return run


# ---- one request in the engine -----------------------------------------------------------------------------------
async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Submission:
    """A request submitted to a DecoderEngine, its events on the event loop. It ends early when the client
    disconnects or the deadline passes (`ended` says which); either aborts it in the engine."""

    def __init__(self, generator, request):
        self.generator, self.request = generator, request
        self.remaining = request.params.n
        self.ended: str | None = None  # "gone" | "timeout" | "closed"
        self._queue: asyncio.Queue = asyncio.Queue()
        self._watch: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, receive, timeout_s: float, in_thread: bool) -> None:
        loop = asyncio.get_running_loop()

        def sink(events) -> None:  # on the engine thread: must never raise there
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, events)
            except RuntimeError:  # the event loop has closed (shutdown): nobody waits for these events
                pass

        if in_thread:  # compiling a response_format grammar can take a while
            await asyncio.to_thread(self.generator.submit, self.request, sink)
        else:
            self.generator.submit(self.request, sink)
        on_submit = getattr(getattr(self.generator, "observer", None), "on_submit", None)
        if on_submit is not None:  # prompt tokens count here, once per request
            on_submit(self.generator, self.request)
        self._watch = asyncio.ensure_future(self._until_gone(receive))
        self._timer = loop.call_later(timeout_s, self._end, "timeout")

    async def _until_gone(self, receive) -> None:
        await _until_disconnect(receive)
        self._end("gone")

    def _end(self, reason: str) -> None:
        if self.remaining and self.ended is None:
            self.ended = reason
            self.generator.abort(self.request.request_id)
            self._queue.put_nowait(None)  # wake the reader now, not when the engine gets to the abort

    async def events(self) -> AsyncIterator:
        try:
            while self.remaining:
                batch = await self._queue.get()
                if batch is None:
                    return
                for ev in batch:
                    self.remaining -= ev.finish_reason is not None
                    yield ev
        finally:
            self.close()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._end("closed")


def _timeout(timeout_s: float) -> RequestError:
    return RequestError(f"Generation took longer than its {timeout_s:g} s deadline (--generation-timeout-s).", 504)


def _failure(ev, timeout_s: float) -> RequestError | None:
    if ev.finish_reason == "timeout":
        return _timeout(timeout_s)
    if ev.finish_reason == "error":
        return RequestError(f"The model failed on this request ({ev.error}); the server keeps serving.", 500)
    return None


# ---- request -> engine -----------------------------------------------------------------------------------------
def _decoder(engine, name: str):
    try:
        return engine.require_decoder(name)
    except RequestError as exc:
        code = "model_not_found" if exc.status == 404 else None
        raise ParamError(str(exc), "model", exc.status, code) from None


def _refuse_unsupported(body) -> None:
    for name in S.UNSUPPORTED:
        if getattr(body, name, None) not in (None, [], {}):
            raise ParamError(f"{name} is not supported by this server: it serves plain text generation.", name)


def _sampling(body, max_tokens, logprobs):
    from ..generation.types import SamplingParams

    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return SamplingParams(
        max_tokens=max_tokens, temperature=pick(body.temperature, 1.0), top_p=pick(body.top_p, 1.0),
        top_k=pick(body.top_k, 0), min_p=pick(body.min_p, 0.0), repetition_penalty=pick(body.repetition_penalty, 1.0),
        presence_penalty=pick(body.presence_penalty, 0.0), frequency_penalty=pick(body.frequency_penalty, 0.0),
        seed=body.seed, stop=stop, stop_token_ids=list(body.stop_token_ids or []), ignore_eos=body.ignore_eos,
        logprobs=logprobs, n=pick(body.n, 1), response_format=body.response_format)


def _validated(params, generator, prompt_len: int, path: str, text_renames: dict[str, str]):
    """generation.params' checks, with the parameter named as this route's client named it."""
    from ..generation.params import validate_params

    try:
        return validate_params(params, max_context=generator.max_context, prompt_len=prompt_len,
                               vocab_size=generator.vocab_size)
    except RequestError as exc:
        message = str(exc)
        for old, new in text_renames.items():
            message = re.sub(rf"\b{old}\b", new, message)
        raise ParamError(message, _param_of(message, path), exc.status) from None


async def _maybe_in_thread(chars: int, fn, *args, **kwargs):
    if chars > _INLINE_CHARS:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def _submit(model, ids: list[int], params, request: Request, timeout_s: float, prefix: str) -> Submission:
    from ..generation.types import GenerationRequest

    now = time.monotonic()
    gen_request = GenerationRequest(f"{prefix}-{uuid.uuid4().hex}", ids, params, arrival=now,
                                    deadline=now + timeout_s)
    sub = Submission(model.generator, gen_request)
    await sub.start(request.receive, timeout_s, in_thread=params.response_format is not None)
    return sub


def _fingerprint(model) -> str:
    return f"fp_deploylm-{__version__}-{model.runner.backend}"


async def chat_completions(engine, body: S.ChatCompletionRequest, request: Request, timeout_s: float) -> Response:
    from ..tasks.generation import build_chat_prompt, has_chat_template, no_chat_template_message

    model = _decoder(engine, body.model)
    _refuse_unsupported(body)
    if not has_chat_template(model.tokenizer):
        raise ParamError(no_chat_template_message(f"Model '{model.name}'"), "model")
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    ids = await _maybe_in_thread(chars, build_chat_prompt, model.tokenizer, messages, model_name=model.name)
    if body.top_logprobs is not None and not body.logprobs:
        raise ParamError("top_logprobs needs logprobs: true.", "top_logprobs")
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    renames = {"max_tokens": "max_completion_tokens"} if body.max_completion_tokens is not None else {}
    params = _validated(_sampling(body, max_tokens, (body.top_logprobs or 0) if body.logprobs else None),
                        model.generator, len(ids), CHAT_PATH, renames)
    return await _respond(model, body, ids, params, request, timeout_s, S.ChatShape)


async def completions(engine, body: S.CompletionRequest, request: Request, timeout_s: float) -> Response:
    from ..tasks.generation import encode_completion_prompt

    model = _decoder(engine, body.model)
    _refuse_unsupported(body)
    if body.echo:
        raise ParamError("echo is not supported by this server.", "echo")
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise ParamError("best_of is not supported by this server beyond best_of = n.", "best_of")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise ParamError(f"prompt holds {len(prompt)} prompts; this server takes one per request: send "
                             "several requests (they are batched together).", "prompt")
        prompt = prompt[0]
    chars = len(prompt) if isinstance(prompt, str) else 0
    ids = await _maybe_in_thread(chars, encode_completion_prompt, model.tokenizer, prompt)
    params = _validated(_sampling(body, body.max_tokens, body.logprobs), model.generator, len(ids),
                        COMPLETIONS_PATH, {"top_logprobs": "logprobs"})
    return await _respond(model, body, ids, params, request, timeout_s, S.CompletionShape)


async def _respond(model, body, ids, params, request, timeout_s: float, shape_cls) -> Response:
    if body.stream_options is not None and not body.stream:
        raise ParamError("stream_options is only allowed when stream is true.", "stream_options")
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    sub = await _submit(model, ids, params, request, timeout_s, shape_cls.id_prefix)
    shape = shape_cls(sub.request.request_id, model.name, _fingerprint(model), params.logprobs is not None,
                      include_usage)
    if body.stream:
        return StreamingResponse(_stream(sub, shape, params.n, timeout_s), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await _answer(sub, shape, params.n, timeout_s)


async def _answer(sub: Submission, shape, n: int, timeout_s: float) -> Response:
    choices = [S.Choice(i) for i in range(n)]
    async with aclosing(sub.events()) as events:
        async for ev in events:
            failure = _failure(ev, timeout_s)
            if failure is not None:
                raise failure
            choices[ev.index].add(ev)
    if sub.ended == "timeout":
        raise _timeout(timeout_s)
    if sub.ended is not None:
        return Response(status_code=CLIENT_GONE)  # nobody reads it; the access metrics do
    return JSONResponse(shape.answer(choices, S.total_usage(choices)))


async def _stream(sub: Submission, shape, n: int, timeout_s: float) -> AsyncIterator[bytes]:
    choices = [S.Choice(i) for i in range(n)]
    for doc in shape.opening(n):
        yield S.sse(doc)
    failure = None
    async with aclosing(sub.events()) as events:
        async for ev in events:
            failure = _failure(ev, timeout_s)
            if failure is not None:
                break
            choice = choices[ev.index]
            offset = choice.chars
            choice.add(ev)
            if ev.text or ev.finish_reason or (shape.logprobs and ev.logprobs):  # not a token held back
                yield S.sse(shape.delta(ev, offset))
    if failure is None and sub.ended == "timeout":
        failure = _timeout(timeout_s)
    if failure is not None:  # the status line is long sent: the error travels as an event (as vLLM does)
        yield S.sse(error_doc(failure.status, str(failure)))
    elif sub.ended is not None:
        return  # client gone: nothing more to write
    elif shape.include_usage:
        yield S.sse(shape.usage_chunk(S.total_usage(choices)))
    yield S.SSE_DONE


# ---- routes ------------------------------------------------------------------------------------------------------
def register_openai_routes(app, engine, limits, generation_timeout_s: float) -> None:
    """Add POST /v1/chat/completions and /v1/completions to `app` for the engine's decoders, and /v1/embeddings
    for its sentence-embedding models. `limits`: its API key and body size are enforced by the server's Guard
    middleware before these routes run; a prompt's own limit is the model's context, checked in tokens;
    embeddings' texts are checked by the engine, as /v1 predict's."""
    from .openai_embeddings import embeddings

    del limits
    router = APIRouter(route_class=_OpenAIRoute, tags=["openai"])

    @router.post(CHAT_PATH, summary="OpenAI chat completion (stream: server-sent events)")
    async def chat(body: S.ChatCompletionRequest, request: Request):
        return await chat_completions(engine, body, request, generation_timeout_s)

    @router.post(COMPLETIONS_PATH, summary="OpenAI text completion (stream: server-sent events)")
    async def complete(body: S.CompletionRequest, request: Request):
        return await completions(engine, body, request, generation_timeout_s)

    @router.post(EMBEDDINGS_PATH, summary="OpenAI embeddings of one text or a batch (sentence-embedding models)")
    async def embed(body: S.EmbeddingRequest, request: Request):
        return await embeddings(engine, body, request)

    app.include_router(router)
