"""validate_params: every OpenAI range refused with a 400 naming the parameter and its limit; good values pass."""

from __future__ import annotations

import dataclasses

import pytest

from deploylm.errors import RequestError
from deploylm.generation.params import DEFAULT_MAX_TOKENS, validate_params
from deploylm.generation.types import SamplingParams

CTX, VOCAB = 2048, 400


def check(prompt_len: int = 10, **kw) -> SamplingParams:
    return validate_params(SamplingParams(**kw), max_context=CTX, prompt_len=prompt_len, vocab_size=VOCAB)


@pytest.mark.parametrize("field,value,words", [
    ("temperature", -0.1, ["temperature", "[0, 2]"]),
    ("temperature", 2.5, ["temperature", "[0, 2]"]),
    ("temperature", float("nan"), ["temperature"]),
    ("top_p", 0.0, ["top_p", "(0, 1]"]),
    ("top_p", 1.5, ["top_p", "(0, 1]"]),
    ("top_k", -2, ["top_k", ">= 1"]),
    ("top_k", 2.5, ["top_k"]),
    ("min_p", 1.1, ["min_p", "[0, 1]"]),
    ("presence_penalty", 2.5, ["presence_penalty", "[-2, 2]"]),
    ("frequency_penalty", -3.0, ["frequency_penalty", "[-2, 2]"]),
    ("repetition_penalty", 0.0, ["repetition_penalty", "(0,"]),
    ("n", 0, ["n", "[1, 16]"]),
    ("n", 17, ["n", "[1, 16]"]),
    ("n", True, ["n"]),
    ("max_tokens", 0, ["max_tokens", ">= 1"]),
    ("max_tokens", -5, ["max_tokens", ">= 1"]),
    ("logprobs", 21, ["top_logprobs", "[0, 20]"]),
    ("logprobs", -1, ["top_logprobs", "[0, 20]"]),
    ("seed", "7", ["seed"]),
    ("stop", ["a", "b", "c", "d", "e"], ["stop", "at most 4"]),
    ("stop", ["ok", ""], ["stop", "non-empty"]),
    ("stop_token_ids", [VOCAB], ["stop_token_ids", f"[0, {VOCAB - 1}]"]),
])
def test_out_of_range_is_a_400_that_names_parameter_and_limit(field, value, words):
    with pytest.raises(RequestError) as e:
        check(**{field: value})
    assert e.value.status == 400
    for w in words:
        assert w in str(e.value)


def test_edges_of_every_range_are_accepted():
    p = check(temperature=2.0, top_p=1.0, top_k=-1, min_p=1.0, presence_penalty=-2.0, frequency_penalty=2.0,
              repetition_penalty=0.01, n=16, max_tokens=1, logprobs=20, seed=0, stop=["a", "b", "c", "d"],
              stop_token_ids=[0, VOCAB - 1])
    assert (p.n, p.logprobs, p.max_tokens) == (16, 20, 1)
    assert check(temperature=0.0, top_k=0, logprobs=0).greedy


def test_prompt_plus_max_tokens_over_context_names_all_three_numbers():
    with pytest.raises(RequestError) as e:
        check(prompt_len=2000, max_tokens=100)
    msg = str(e.value)
    assert e.value.status == 400
    assert "prompt is 2000 tokens and max_tokens 100" in msg and "context of 2048 tokens" in msg
    assert check(prompt_len=2000, max_tokens=48).max_tokens == 48  # exactly the context fits


def test_missing_max_tokens_takes_the_rest_of_the_context_capped():
    assert check(prompt_len=10, max_tokens=None).max_tokens == DEFAULT_MAX_TOKENS
    assert check(prompt_len=CTX - 100, max_tokens=None).max_tokens == 100
    original = SamplingParams(max_tokens=None)
    validate_params(original, max_context=CTX, prompt_len=5, vocab_size=VOCAB)
    assert original.max_tokens is None  # the caller's object is not changed behind its back


def test_empty_prompt_is_refused():
    with pytest.raises(RequestError, match="prompt is empty"):
        check(prompt_len=0)


def test_response_format_is_checked_here_too():
    with pytest.raises(RequestError, match="response_format") as e:
        check(response_format={"type": "xml"})
    assert e.value.status == 400
    ok = check(response_format={"type": "json_object"})
    assert ok.response_format == {"type": "json_object"}


def test_valid_params_come_back_unchanged():
    p = SamplingParams(max_tokens=20, temperature=0.7, top_p=0.9, top_k=40, seed=3, stop=["\n\n"], n=2)
    snapshot = dataclasses.replace(p)
    assert validate_params(p, max_context=CTX, prompt_len=7, vocab_size=VOCAB) == snapshot
