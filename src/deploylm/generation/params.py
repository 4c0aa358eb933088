"""Checks one request's SamplingParams against OpenAI's ranges and the model's context, before it is queued:
a bad value is a 400 that names the parameter (by its OpenAI name) and the limit, never a failure mid-batch."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import RequestError
from .types import SamplingParams

# When the client names no max_tokens: the rest of the context, capped. Uncapped, one request to a model that
# never emits EOS would hold a batch slot and its KV for the whole context (thousands of CPU decode steps);
# 1024 tokens holds any ordinary answer, and a client that wants more can ask for it explicitly.
DEFAULT_MAX_TOKENS = 1024
MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 4


def default_max_tokens(max_context: int, prompt_len: int) -> int:
    """max_tokens for a request that gave none: what is left of the context, at most DEFAULT_MAX_TOKENS."""
    return max(1, min(DEFAULT_MAX_TOKENS, max_context - prompt_len))


def validate_params(p: SamplingParams, *, max_context: int, prompt_len: int, vocab_size: int) -> SamplingParams:
    """Return `p` checked (a copy with max_tokens filled in when it is None), or raise RequestError(400)."""
    if p.max_tokens is None:
        p = dataclasses.replace(p, max_tokens=default_max_tokens(max_context, prompt_len))
    _check_ranges(p)
    _check_stops(p, vocab_size)
    if prompt_len < 1:
        raise RequestError("the prompt is empty: give at least one token of prompt", 400)
    if prompt_len + p.max_tokens > max_context:
        raise RequestError(
            f"prompt is {prompt_len} tokens and max_tokens {p.max_tokens}: together over the model's context of "
            f"{max_context} tokens; shorten the prompt or lower max_tokens to at most "
            f"{max(0, max_context - prompt_len)}", 400)
    if p.response_format is not None:
        from .structured import validate_response_format  # xgrammar loads only for requests that use it

        validate_response_format(p.response_format)
    return p


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok_type and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise RequestError(f"{name} must be a number in {left}{lo:g}, {hi:g}]; got {value!r}", 400)


def _integer(name: str, value: Any, lo: int, hi: int | None = None, *, extra: str = "") -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        limit = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise RequestError(f"{name} must be {limit}{extra}; got {value!r}", 400)


def _check_ranges(p: SamplingParams) -> None:
    _integer("max_tokens", p.max_tokens, 1)
    _number("temperature", p.temperature, 0.0, 2.0)
    _number("top_p", p.top_p, 0.0, 1.0, lo_open=True)
    if not (isinstance(p.top_k, int) and not isinstance(p.top_k, bool) and (p.top_k in (-1, 0) or p.top_k >= 1)):
        raise RequestError(f"top_k must be -1 or 0 (off) or an integer >= 1; got {p.top_k!r}", 400)
    _number("min_p", p.min_p, 0.0, 1.0)
    _number("presence_penalty", p.presence_penalty, -2.0, 2.0)
    _number("frequency_penalty", p.frequency_penalty, -2.0, 2.0)
    _number("repetition_penalty", p.repetition_penalty, 0.0, math.inf, lo_open=True)
    _integer("n", p.n, 1, MAX_N)
    if p.logprobs is not None:
        _integer("top_logprobs", p.logprobs, 0, MAX_TOP_LOGPROBS)
    if p.seed is not None:
        _integer("seed", p.seed, -(2**63), 2**64 - 1)
    if not isinstance(p.ignore_eos, bool):
        raise RequestError(f"ignore_eos must be true or false; got {p.ignore_eos!r}", 400)


def _check_stops(p: SamplingParams, vocab_size: int) -> None:
    if not isinstance(p.stop, list) or len(p.stop) > MAX_STOP_STRINGS:
        raise RequestError(f"stop must be a list of at most {MAX_STOP_STRINGS} strings; got {p.stop!r}", 400)
    for s in p.stop:
        if not isinstance(s, str) or not s:
            raise RequestError(f"stop strings must be non-empty strings; got {s!r}", 400)
    if not isinstance(p.stop_token_ids, list):
        raise RequestError(f"stop_token_ids must be a list of token ids; got {p.stop_token_ids!r}", 400)
    for t in p.stop_token_ids:
        _integer("stop_token_ids", t, 0, vocab_size - 1, extra=" (the model's vocabulary)")
