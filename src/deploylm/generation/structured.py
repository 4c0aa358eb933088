"""Constrained decoding for OpenAI's `response_format`, through xgrammar.

xgrammar rather than llguidance: it takes a Hugging Face tokenizer and a JSON schema directly, compiles a
grammar once into a per-token mask it caches, and its CPU mask kernel works on plain torch tensors; vLLM,
SGLang and TensorRT-LLM use it, so its JSON-schema coverage is what OpenAI-style clients are tested against.

JSON is generated compact (no free whitespace): with whitespace allowed a model can emit blanks forever and
never close the object. `strict` is accepted and never loosens: the output holds only the properties the
schema names (xgrammar's strict mode), which is always valid against the schema. json_object is any JSON
object, properties free.

Tokens holding a raw control character (bytes 0x00-0x1F) are always masked: compact JSON never needs one
(inside strings they must be escaped), yet xgrammar's length-bounded string rule (maxLength) lets them
through, and `json.loads` then refuses the output.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any, Optional, Sequence

import torch
import xgrammar as xgr

from ..errors import RequestError
from ..settings import num_threads

_KINDS = ("text", "json_object", "json_schema")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CPP_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[20:05:55] /project/cpp/x.cc:5082: " on xgrammar errors
_OBJECT_SCHEMA = json.dumps({"type": "object"})
_CACHE_LIMIT = 128  # compiled grammars kept per model: a mask table each, sized by the vocabulary


def _grammar_key(rf: Any) -> Optional[tuple[str, str]]:
    """None for free text, else (kind, canonical schema JSON); RequestError 400 for a bad shape."""
    if rf is None:
        return None
    if not isinstance(rf, dict) or rf.get("type") not in _KINDS:
        raise RequestError('response_format must be an object whose "type" is "text", "json_object" or '
                           f'"json_schema"; got {rf!r}', 400)
    if rf["type"] == "text":
        return None
    if rf["type"] == "json_object":
        return ("json_object", _OBJECT_SCHEMA)
    spec = rf.get("json_schema")
    if not isinstance(spec, dict):
        raise RequestError('response_format.json_schema must be an object {"name": ..., "schema": {...}} when '
                           '"type" is "json_schema"', 400)
    name, schema, strict = spec.get("name"), spec.get("schema"), spec.get("strict")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise RequestError("response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'; "
                           f"got {name!r}", 400)
    if strict is not None and not isinstance(strict, bool):
        raise RequestError(f"response_format.json_schema.strict must be true or false; got {strict!r}", 400)
    if not isinstance(schema, dict):
        raise RequestError("response_format.json_schema.schema must be a JSON schema object, e.g. "
                           f'{{"type": "object", "properties": {{...}}}}; got {schema!r}', 400)
    try:
        canonical = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise RequestError(f"response_format.json_schema.schema is not plain JSON: {e}", 400) from e
    return ("json_schema", canonical)


@functools.lru_cache(maxsize=_CACHE_LIMIT)
def _check_schema(kind: str, canonical: str) -> None:
    try:
        xgr.Grammar.from_json_schema(canonical, **_schema_options(kind))
    except RuntimeError as e:
        raise RequestError("response_format.json_schema.schema is not a JSON schema this server can enforce: "
                           f"{_clean(e)}", 400) from e


def _schema_options(kind: str) -> dict:
    return dict(any_whitespace=False, strict_mode=(kind == "json_schema"))


def _clean(e: Exception) -> str:
    return _CPP_PREFIX.sub("", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def validate_response_format(rf: Any) -> None:
    """RequestError 400 unless `rf` is a response_format this server can enforce (schema included)."""
    key = _grammar_key(rf)
    if key is not None:
        _check_schema(*key)


class GrammarState:
    """One choice's position in its grammar. Per step: `mask_logits(row)`, then `accept(chosen)`."""

    def __init__(self, compiled: "xgr.CompiledGrammar", vocab_size: int, stop_token_ids: Sequence[int],
                 banned: Optional[torch.Tensor] = None):
        self._stop = list(stop_token_ids)
        self._banned = banned  # ids never allowed, whatever the grammar says (a few: an index beats a [V] mask)
        # Without a stop token the grammar must end itself when the JSON closes, else it could never end.
        self._matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=not self._stop)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    @property
    def terminated(self) -> bool:
        """The JSON is complete and its stop token (EOS) accepted: the engine finishes the choice."""
        return self._matcher.is_terminated()

    def mask_logits(self, row: torch.Tensor) -> None:
        """Set -inf, in place, on every token of `row` [V] the grammar forbids next. Once the JSON is
        complete only the stop tokens (EOS) remain allowed."""
        if row.shape[-1] != self.vocab_size:
            raise ValueError(f"logits row has {row.shape[-1]} entries, the grammar was built for {self.vocab_size}")
        if self.terminated:  # nothing may follow; keep EOS so an engine that asks anyway gets it
            keep = row[self._stop].clone() if self._stop else None
            row.fill_(float("-inf"))
            if keep is not None:
                row[self._stop] = keep
            return
        self._matcher.fill_next_token_bitmask(self._bitmask)
        xgr.apply_token_bitmask_inplace(row.unsqueeze(0), self._bitmask)
        if self._banned is not None:
            row.index_fill_(0, self._banned.to(row.device), float("-inf"))

    def accept(self, token_id: int) -> None:
        if self.terminated:
            return
        if not self._matcher.accept_token(token_id):
            raise RuntimeError(f"token {token_id} is not allowed by the grammar here: it was chosen without "
                               "mask_logits on its row")


class GrammarFactory:
    """Grammars for one model: the tokenizer's vocabulary is analysed once (xgrammar's compiler), each
    distinct response_format is compiled once and cached; `state(rf)` then costs one matcher."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Optional[Sequence[int]] = None):
        self.vocab_size = vocab_size
        # vocab_size is the logits' width, which may exceed the tokenizer's (padded embeddings): xgrammar
        # masks the ids past the tokenizer.
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) if stop_token_ids else None)
        self.stop_token_ids = list(info.stop_token_ids)
        self._banned = _control_tokens(info.decoded_vocab, vocab_size, self.stop_token_ids)
        self._compiler = xgr.GrammarCompiler(info, max_threads=num_threads(), cache_enabled=False)
        self._compiled: dict[tuple[str, str], "xgr.CompiledGrammar"] = {}
        self._lock = threading.Lock()

    def compile(self, response_format: Any) -> Optional["xgr.CompiledGrammar"]:
        """The compiled grammar for `response_format` (None for text); may take a while the first time for a
        schema, so a transport can call it before submitting the request. Thread-safe."""
        key = _grammar_key(response_format)
        if key is None:
            return None
        with self._lock:
            hit = self._compiled.get(key)
        if hit is not None:
            return hit
        _check_schema(*key)
        compiled = self._compiler.compile_json_schema(key[1], **_schema_options(key[0]))
        with self._lock:
            if len(self._compiled) >= _CACHE_LIMIT:
                self._compiled.pop(next(iter(self._compiled)))  # oldest first: dicts keep insertion order
            self._compiled[key] = compiled
        return compiled

    def state(self, response_format: Any) -> Optional[GrammarState]:
        compiled = self.compile(response_format)
        if compiled is None:
            return None
        return GrammarState(compiled, self.vocab_size, self.stop_token_ids, self._banned)


def _control_tokens(decoded_vocab: Sequence[bytes], vocab_size: int, keep: Sequence[int]) -> Optional[torch.Tensor]:
    keep = set(keep)
    ids = [i for i, b in enumerate(decoded_vocab[:vocab_size]) if i not in keep and any(c < 0x20 for c in b)]
    return torch.tensor(ids, dtype=torch.long) if ids else None
