"""Request bodies of the OpenAI routes (pydantic: FastAPI validates them and documents them in OpenAPI) and the
response shapes, built as plain dicts in OpenAI's exact layout (`chat.completion`, `chat.completion.chunk`,
`text_completion`). Range checks live in generation/params.py, not here: these models only check types."""

from __future__ import annotations

import json
import math
import time
from typing import Any, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..generation.types import GenerationEvent, TokenLogprob

# OpenAI parameters this server does not implement: refused with a 400 naming them when set (a silently
# ignored tool list or logit_bias would give answers the client did not ask for).
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "suffix", "audio",
               "modalities", "prediction")
_FLOOR_LOGPROB = -9999.0  # JSON has no -Infinity: a masked alternative's logprob, as vLLM reports it


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with `usage` and empty `choices`.")


class _Common(BaseModel):
    """What both routes take: OpenAI's sampling parameters plus the common extensions (vLLM's names)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="A served text-generation model (see GET /v1/models).")
    temperature: Optional[float] = Field(None, description="0 (greedy) to 2; default 1.")
    top_p: Optional[float] = Field(None, description="Nucleus sampling, in (0, 1]; default 1.")
    n: Optional[int] = Field(None, description="Choices to generate, 1 to 16; default 1.")
    stop: Optional[Union[str, List[str]]] = Field(None, description="Up to 4 strings that end a choice (not "
                                                  "included in the text).")
    seed: Optional[int] = Field(None, description="Same seed, same text, whatever else the server is running.")
    stream: bool = Field(False, description="Server-sent events, `data: {...}` chunks, then `data: [DONE]`.")
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[float] = Field(None, description="-2 to 2, subtracted once per seen output token.")
    frequency_penalty: Optional[float] = Field(None, description="-2 to 2, subtracted per occurrence.")
    response_format: Optional[dict] = Field(None, description='{"type": "text" | "json_object" | "json_schema", '
                                            '"json_schema": {"name": ..., "schema": {...}}}: constrained decoding.')
    user: Optional[str] = Field(None, description="Accepted and ignored (OpenAI: an end-user id).")
    # extensions (vLLM's names)
    top_k: Optional[int] = Field(None, description="Extension: keep the k most likely tokens (0 or -1: off).")
    min_p: Optional[float] = Field(None, description="Extension: drop tokens below min_p x the top probability.")
    repetition_penalty: Optional[float] = Field(None, description="Extension: > 0; 1 is off (HF meaning).")
    stop_token_ids: Optional[List[int]] = Field(None, description="Extension: token ids that end a choice.")
    ignore_eos: bool = Field(False, description="Extension: keep generating past EOS (benchmarks).")
    # OpenAI parameters refused when set (see UNSUPPORTED)
    tools: Optional[Any] = None
    tool_choice: Optional[Any] = None
    functions: Optional[Any] = None
    function_call: Optional[Any] = None
    logit_bias: Optional[Any] = None
    audio: Optional[Any] = None
    modalities: Optional[Any] = None
    prediction: Optional[Any] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(..., description="system, developer, user, assistant or tool.")
    content: Optional[Union[str, List[dict]]] = Field(None, description='Text, or text parts '
                                                      '[{"type": "text", "text": "..."}].')
    name: Optional[str] = None


class ChatCompletionRequest(_Common):
    messages: List[ChatMessage] = Field(..., description="The conversation, rendered by the model's chat template.")
    max_completion_tokens: Optional[int] = Field(None, description="Most tokens to generate (wins over max_tokens).")
    max_tokens: Optional[int] = Field(None, description="Deprecated name of max_completion_tokens.")
    logprobs: bool = Field(False, description="Return each output token's logprob.")
    top_logprobs: Optional[int] = Field(None, description="With logprobs: the k most likely tokens at each position "
                                        "(0 to 20).")
    parallel_tool_calls: Optional[bool] = None  # accepted: meaningless without tools, which are refused
    metadata: Optional[dict] = None  # accepted and ignored
    store: Optional[bool] = None  # accepted and ignored

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "smollm2-135m", "messages": [{"role": "user", "content": "Name three uses of a paperclip."}],
        "max_completion_tokens": 64}]})


class CompletionRequest(_Common):
    prompt: Union[str, List[int], List[str], List[List[int]]] = Field(
        ..., description="One prompt: text or token ids (a list holding one of them is accepted too).")
    max_tokens: Optional[int] = Field(16, description="Most tokens to generate; default 16 (as OpenAI).")
    logprobs: Optional[int] = Field(None, description="Return the logprobs of the k most likely tokens (0 to 20).")
    echo: bool = Field(False, description="Not supported (must be false).")
    best_of: Optional[int] = Field(None, description="Not supported beyond n.")
    suffix: Optional[str] = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "gemma3-270m", "prompt": "The capital of France is", "max_tokens": 32}]})


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. Token-id inputs are typed here so that they get the route's own clear refusal."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "minilm", "input": ["A man is playing a guitar.", "Someone plays music."]}]})

    model: str = Field(..., description="A served sentence-embedding (feature-extraction) model.")
    input: Union[str, List[str], List[int], List[List[int]]] = Field(
        ..., description="A text or a list of texts (at most --max-inputs); token-id arrays are not supported.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes.")
    dimensions: Optional[int] = Field(None, description="Must equal the model's dimension: vectors are not "
                                      "truncated (a cut normalised vector is no longer normalised).")
    user: Optional[str] = Field(None, description="Accepted and ignored (OpenAI: an end-user id).")


# ---- responses ------------------------------------------------------------------------------------------------
def _lp(value: float) -> float:
    return value if math.isfinite(value) else _FLOOR_LOGPROB


def chat_logprobs(entries: list[TokenLogprob]) -> dict:
    def one(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": _lp(logprob), "bytes": list(token.encode("utf-8"))}

    return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for _, t, lp in e.top]}
                        for e in entries], "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict:
    """OpenAI's legacy layout; `offset`: characters of this choice's text before the first entry."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [_lp(e.logprob) for e in entries],
            "top_logprobs": [{t: _lp(lp) for _, t, lp in e.top} for e in entries], "text_offset": offsets}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


class Choice:
    """One choice's text and logprobs as its events arrive (non-stream answers, and usage of streams)."""

    def __init__(self, index: int):
        self.index = index
        self.text: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: Optional[str] = None
        self.completion_tokens = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.chars = 0  # text emitted so far: completions' text_offset

    def add(self, ev: GenerationEvent) -> None:
        self.text.append(ev.text)
        self.logprobs += ev.logprobs
        self.chars += len(ev.text)
        self.completion_tokens = ev.completion_tokens
        self.prompt_tokens, self.cached_tokens = ev.prompt_tokens, ev.cached_tokens
        if ev.finish_reason is not None:
            self.finish_reason = ev.finish_reason


def total_usage(choices: list[Choice]) -> dict:
    """The prompt counts once whatever n is; cached: what every choice got from the prefix cache."""
    return usage(choices[0].prompt_tokens, sum(c.completion_tokens for c in choices),
                 min(c.cached_tokens for c in choices))


# ---- chunks and answers, per route --------------------------------------------------------------------------
class _Shape:
    id_prefix = chunk_object = answer_object = ""

    def __init__(self, request_id: str, model_name: str, fingerprint: str, logprobs: bool, include_usage: bool):
        self.base = {"id": request_id, "object": self.chunk_object, "created": int(time.time()),
                     "model": model_name, "system_fingerprint": fingerprint}
        self.logprobs, self.include_usage = logprobs, include_usage

    def chunk(self, choices: list[dict], **extra: Any) -> dict:
        doc = {**self.base, "choices": choices}
        if self.include_usage:  # OpenAI: every chunk has "usage": null, the last one the figures
            doc["usage"] = None
        return {**doc, **extra}

    def usage_chunk(self, usage: dict) -> dict:
        return self.chunk([], usage=usage)

    def opening(self, n: int) -> list[dict]:
        return []


class ChatShape(_Shape):
    id_prefix, chunk_object, answer_object = "chatcmpl", "chat.completion.chunk", "chat.completion"

    def opening(self, n: int) -> list[dict]:
        return [self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}]) for i in range(n)]

    def delta(self, ev, offset: int) -> dict:
        delta = {"content": ev.text} if ev.text or ev.finish_reason is None else {}
        logprobs = chat_logprobs(ev.logprobs) if self.logprobs and ev.logprobs else None
        return self.chunk([{"index": ev.index, "delta": delta, "logprobs": logprobs,
                            "finish_reason": ev.finish_reason}])

    def answer(self, choices: list[Choice], usage: dict) -> dict:
        return {**self.base, "object": self.answer_object, "usage": usage, "choices": [
            {"index": c.index, "message": {"role": "assistant", "content": "".join(c.text), "refusal": None},
             "logprobs": chat_logprobs(c.logprobs) if self.logprobs else None, "finish_reason": c.finish_reason}
            for c in choices]}


class CompletionShape(_Shape):
    id_prefix, chunk_object, answer_object = "cmpl", "text_completion", "text_completion"

    def delta(self, ev, offset: int) -> dict:
        logprobs = completion_logprobs(ev.logprobs, offset) if self.logprobs else None
        return self.chunk([{"index": ev.index, "text": ev.text, "logprobs": logprobs,
                            "finish_reason": ev.finish_reason}])

    def answer(self, choices: list[Choice], usage: dict) -> dict:
        return {**self.base, "object": self.answer_object, "usage": usage, "choices": [
            {"index": c.index, "text": "".join(c.text),
             "logprobs": completion_logprobs(c.logprobs, 0) if self.logprobs else None,
             "finish_reason": c.finish_reason} for c in choices]}


def sse(doc: Any) -> bytes:
    return b"data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
