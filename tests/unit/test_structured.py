"""Structured output through xgrammar: random logits driven through the grammar mask token by token always
end in JSON that parses and fits the schema; bad response_format shapes are 400s."""

from __future__ import annotations

import json

import pytest
import torch

from deploylm.errors import RequestError
from deploylm.generation.sampler import Sampler, SeqSampling
from deploylm.generation.structured import GrammarFactory, validate_response_format
from deploylm.generation.types import SamplingParams
from tiny_decoders import tiny_tokenizer

PAD = 8  # the model's logits are wider than the tokenizer's vocabulary, as padded embeddings make them
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
        "tag": {"enum": ["red", "green"]},
        "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
    },
    "required": ["name", "count", "ok", "tag"],
}
SCHEMA_RF = {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def factory(tok):
    return GrammarFactory(tok, len(tok) + PAD, [tok.convert_tokens_to_ids("<|im_end|>")])


def drive(tok, factory, rf, seed: int, temperature: float = 1.0, max_steps: int = 3000) -> tuple[list[int], object]:
    """Random "model": fresh random logits every step, sampled under the grammar until it terminates."""
    vocab = len(tok) + PAD
    grammar = factory.state(rf)
    state = SeqSampling(SamplingParams(temperature=temperature, seed=seed), [0], vocab, grammar=grammar)
    gen = torch.Generator().manual_seed(1000 + seed)
    ids = []
    for _ in range(max_steps):
        logits = torch.randn(1, vocab, generator=gen) * 3
        token = Sampler().sample(logits, [state])[0].token_id
        state.append(token)
        ids.append(token)
        if grammar.terminated:
            return ids, grammar
    raise AssertionError(f"grammar did not terminate in {max_steps} steps")


def check_against_schema(obj) -> None:
    """SCHEMA checked by hand (jsonschema is not a dependency)."""
    assert isinstance(obj, dict)
    assert set(obj) <= set(SCHEMA["properties"]) and set(SCHEMA["required"]) <= set(obj)
    assert isinstance(obj["name"], str) and len(obj["name"]) <= 8
    assert isinstance(obj["count"], int) and not isinstance(obj["count"], bool)
    assert isinstance(obj["ok"], bool)
    assert obj["tag"] in ("red", "green")
    if "scores" in obj:
        assert isinstance(obj["scores"], list) and len(obj["scores"]) <= 3
        assert all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj["scores"])


@pytest.mark.parametrize("seed", range(6))
def test_random_logits_under_a_schema_end_in_valid_json(tok, factory, seed):
    ids, grammar = drive(tok, factory, SCHEMA_RF, seed)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert ids[-1] == eos and grammar.terminated
    assert all(i < len(tok) for i in ids)  # the padded ids past the tokenizer are never chosen
    check_against_schema(json.loads(tok.decode(ids[:-1])))


@pytest.mark.parametrize("seed", range(4))
def test_random_logits_under_json_object_end_in_a_json_object(tok, factory, seed):
    ids, _ = drive(tok, factory, {"type": "json_object"}, seed)
    assert isinstance(json.loads(tok.decode(ids, skip_special_tokens=True)), dict)


def test_greedy_rows_follow_the_grammar_too(tok, factory):
    ids, _ = drive(tok, factory, SCHEMA_RF, seed=0, temperature=0.0, max_steps=400)
    check_against_schema(json.loads(tok.decode(ids, skip_special_tokens=True)))


def allowed(grammar, vocab: int) -> set[int]:
    row = torch.zeros(vocab)
    grammar.mask_logits(row)
    return set(torch.nonzero(row == 0).flatten().tolist())


def test_first_tokens_must_open_an_object_and_only_eos_follows_the_end(tok, factory):
    vocab = len(tok) + PAD
    grammar = factory.state({"type": "json_object"})
    first = allowed(grammar, vocab)
    assert first and all(tok.decode([i]).startswith("{") for i in first)
    for i in tok.encode("{}"):
        grammar.accept(i)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert allowed(grammar, vocab) == {eos}  # complete: the model may only end
    assert not grammar.terminated
    grammar.accept(eos)
    assert grammar.terminated and allowed(grammar, vocab) == {eos}


def test_raw_control_characters_are_never_allowed_inside_strings(tok, factory):
    grammar = factory.state(SCHEMA_RF)
    for i in tok.encode('{"count": 1, "name": "'):
        grammar.accept(i)
    ok = allowed(grammar, len(tok) + PAD)
    assert tok.convert_tokens_to_ids("a") in ok
    controls = [i for i in range(len(tok)) if any(ord(c) < 0x20 for c in tok.decode([i]))]
    assert controls and not ok & set(controls)


def test_a_token_the_grammar_forbids_is_refused(tok, factory):
    grammar = factory.state({"type": "json_object"})
    with pytest.raises(RuntimeError, match="not allowed"):
        grammar.accept(tok.convert_tokens_to_ids("a"))


def test_compiled_grammars_are_cached_by_schema_content(tok, factory):
    reordered = {"type": "json_schema", "json_schema": {"name": "thing", "schema": dict(reversed(SCHEMA.items()))}}
    assert factory.compile(SCHEMA_RF) is factory.compile(reordered)
    assert factory.compile({"type": "json_object"}) is not factory.compile(SCHEMA_RF)
    assert factory.state({"type": "text"}) is None and factory.state(None) is None


def test_logits_row_of_the_wrong_width_is_refused(tok, factory):
    with pytest.raises(ValueError, match="entries"):
        factory.state({"type": "json_object"}).mask_logits(torch.zeros(len(tok)))


@pytest.mark.parametrize("rf,words", [
    ("json", '"type"'),
    ({"type": "yaml"}, '"type"'),
    ({"type": "json_schema"}, "json_schema must be an object"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "schema must be a JSON schema object"),
    ({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}, "name must be"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "strict must be"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "foo"}}}, 'Unsupported type "foo"'),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": 3}}}, "properties"),
])
def test_bad_response_formats_are_400s(rf, words):
    with pytest.raises(RequestError) as e:
        validate_response_format(rf)
    assert e.value.status == 400 and words in str(e.value)
    assert "/project/cpp" not in str(e.value)  # xgrammar's source location is not the client's business


def test_good_response_formats_pass():
    for rf in (None, {"type": "text"}, {"type": "json_object"}, SCHEMA_RF,
               {"type": "json_schema", "json_schema": {"schema": {"type": "array", "items": {"type": "string"}}}}):
        validate_response_format(rf)
