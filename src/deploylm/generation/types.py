"""Typed messages between the parts of the decoder path: what a transport asks for (GenerationRequest with
SamplingParams), what the scheduler hands the runner (StepBatch of SeqChunks), and what comes back to the
transport (GenerationEvent). Plain dataclasses, no torch: the scheduler and its tests import only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence


@dataclass
class SamplingParams:
    """Per-request sampling, validated by `validate()` (RequestError 400 naming the parameter and its limit).
    temperature 0 means greedy. `seed` makes the request's draws independent of whatever else is batched."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF/vLLM meaning: divides positive logits of seen tokens (prompt + output)
    presence_penalty: float = 0.0  # OpenAI meaning: subtracted once per seen output token
    frequency_penalty: float = 0.0  # OpenAI meaning: subtracted per occurrence in the output
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: Optional[int] = None  # None: none; k >= 0: the chosen token's logprob + k top alternatives
    n: int = 1
    response_format: Optional[dict] = None  # OpenAI shape: {"type": "json_object"} | {"type": "json_schema", ...}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float = 0.0  # time.monotonic() at submit
    deadline: Optional[float] = None  # time.monotonic() after which it is aborted (504)


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, logprob), best first


@dataclass
class GenerationEvent:
    """One delta for one choice of one request. `finish_reason` set on the choice's last event:
    "stop" (EOS / stop string / stop token), "length" (max_tokens or context), "abort", "timeout", "error"."""

    request_id: str
    index: int  # choice index, 0..n-1
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # so far, for this choice
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    error: Optional[str] = None


# --- scheduler -> runner -------------------------------------------------------------------

@dataclass
class SeqChunk:
    """Compute `token_ids` for sequence `seq_id`, whose KV already holds `start_pos` tokens (positions
    start_pos .. start_pos+len-1). `sample`: return logits of the last token (prompt done, or decode)."""

    seq_id: int
    token_ids: list[int]
    start_pos: int
    sample: bool


@dataclass
class KVCopy:
    """Copy the first `n_tokens` of KV from `src` to `dst` (prefix cache: save a prompt prefix, or restore
    one into a new sequence). Ids share one namespace: sequences and cache entries."""

    src: int
    dst: int
    n_tokens: int


@dataclass
class StepBatch:
    chunks: list[SeqChunk]
    reserve: dict[int, int] = field(default_factory=dict)  # seq/entry id -> KV capacity in tokens (grow only)
    copies: list[KVCopy] = field(default_factory=list)  # done after `reserve`, before computing
    free: list[int] = field(default_factory=list)  # seq/entry ids whose KV is released, before anything else
    snapshots: list[KVCopy] = field(default_factory=list)  # done after computing (prefix cache: keep a prompt)

    @property
    def num_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)


class DecoderRunner(Protocol):
    """Owns the model and every sequence's KV. Backends (torch fp32, bf16, weight-int8) differ only here."""

    backend: str
    vocab_size: int
    max_context: int
    kv_bytes_per_token: int
    eos_token_ids: Sequence[int]

    def step(self, batch: StepBatch) -> Any:
        """Apply free, reserve, copies; compute every chunk; then snapshots; return float32 logits [rows, vocab] (a torch
        tensor), one row per chunk with sample=True, in chunk order."""
        ...

    def kv_tokens_allocated(self) -> int: ...
