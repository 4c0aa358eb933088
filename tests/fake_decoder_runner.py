"""A fake DecoderRunner for scheduler and engine tests: no model, KV kept as plain token lists.

It checks the scheduler's promises on every step (a chunk never writes past its reserved capacity, positions are
contiguous per sequence, a copy's source holds the tokens it copies, reservations only grow and never sum past the
budget) and answers with logits that depend only on a sequence's whole token history (`fake_logits`), so a test
computes the expected tokens with `reference` without running the scheduler or the engine, and any KV mix-up
(a wrong prefix copy, a lost token, a shifted position) changes the output.
"""

from __future__ import annotations

import copy
import threading
from typing import Callable, Optional, Sequence

import torch

from deploylm.generation.types import StepBatch

VOCAB = 400  # tiny_tokenizer()'s size
EOS = 2  # tiny_tokenizer()'s "<|im_end|>"
TRIGGER = 3  # never generated; a prompt holding it gets EOS as the 4th token after it
BANNED = (0, 1, EOS, TRIGGER)  # pad and <|im_start|> never come out; EOS only after TRIGGER
_MOD = 2**61 - 1


def history_hash(history: Sequence[int]) -> int:
    h = 17
    for t in history:
        h = (h * 1_000_003 + t + 1) % _MOD
    return h


def fake_logits(history: Sequence[int], vocab_size: int = VOCAB) -> torch.Tensor:
    """float32 [vocab]: a spread (sampling has something to draw from) pseudo-random row seeded by the history."""
    gen = torch.Generator().manual_seed(history_hash(history))
    row = torch.randn(vocab_size, generator=gen) * 2.0
    row[list(BANNED)] = float("-inf")
    if len(history) >= 4 and history[-4] == TRIGGER:
        row[EOS] = 50.0
    return row


def reference(prompt: Sequence[int], max_tokens: int, stop: Sequence[int] = (EOS,)) -> list[int]:
    """Greedy tokens of the fake model for `prompt` alone, the stopping token included."""
    history, out = list(prompt), []
    while len(out) < max_tokens:
        token = int(fake_logits(history).argmax())
        out.append(token)
        history.append(token)
        if token in stop:
            break
    return out


class FakeRunner:
    """DecoderRunner protocol. `on_step(runner, batch)`, if set, runs after free/reserve/copies and before the
    compute (where a real forward would raise): tests pause, abort or raise from there."""

    backend = "fake"

    def __init__(self, kv_budget: int, vocab_size: int = VOCAB, max_context: int = 4096,
                 eos_token_ids: Sequence[int] = (EOS,)):
        self.kv_budget = kv_budget
        self.vocab_size = vocab_size
        self.max_context = max_context
        self.kv_bytes_per_token = 64
        self.eos_token_ids = tuple(eos_token_ids)
        self.capacity: dict[int, int] = {}  # id -> reserved tokens
        self.kv: dict[int, list[int]] = {}  # id -> the tokens whose KV it holds, by position
        self.batches: list[StepBatch] = []  # a copy of every batch received, in order
        self.unknown_frees: list[int] = []
        self.violations: list[str] = []
        self.on_step: Optional[Callable[["FakeRunner", StepBatch], None]] = None
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------------------------
    def kv_tokens_allocated(self) -> int:
        return sum(self.capacity.values())

    def step(self, batch: StepBatch) -> torch.Tensor:
        with self._lock:
            self.batches.append(copy.deepcopy(batch))
        for seq_id in batch.free:
            if self.capacity.pop(seq_id, None) is None:
                self.unknown_frees.append(seq_id)
            self.kv.pop(seq_id, None)
        for seq_id, cap in batch.reserve.items():
            self._reserve(seq_id, cap)
        for c in batch.copies:
            self._copy(c.src, c.dst, c.n_tokens, "copy")
        if self.on_step is not None:
            self.on_step(self, batch)
        rows = self._compute(batch)
        for c in batch.snapshots:
            self._copy(c.src, c.dst, c.n_tokens, "snapshot")
        return torch.stack(rows) if rows else torch.empty((0, self.vocab_size))

    # -- checks --------------------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.violations.append(message)
        raise AssertionError(message)

    def _reserve(self, seq_id: int, cap: int) -> None:
        old = self.capacity.get(seq_id, 0)
        if cap < old:
            self._fail(f"reserve shrinks {seq_id}: {old} -> {cap}")
        self.capacity[seq_id] = cap
        self.kv.setdefault(seq_id, [])
        if self.kv_tokens_allocated() > self.kv_budget:
            self._fail(f"{self.kv_tokens_allocated()} tokens reserved, over the budget of {self.kv_budget}: "
                       f"{dict(self.capacity)}")

    def _copy(self, src: int, dst: int, n: int, what: str) -> None:
        held = len(self.kv.get(src, []))
        if held < n:
            self._fail(f"{what} {src}->{dst} of {n} tokens, but {src} holds {held}")
        if n > self.capacity.get(dst, 0):
            self._fail(f"{what} {src}->{dst} of {n} tokens into a capacity of {self.capacity.get(dst, 0)}")
        self.kv[dst] = list(self.kv[src][:n])

    def _compute(self, batch: StepBatch) -> list[torch.Tensor]:
        ids = [c.seq_id for c in batch.chunks]
        if len(set(ids)) != len(ids):
            self._fail(f"a sequence twice in one step: {ids}")
        rows = []
        for c in batch.chunks:
            if c.seq_id not in self.capacity:
                self._fail(f"chunk for {c.seq_id}, which has no KV reserved")
            kv = self.kv[c.seq_id]
            if not c.token_ids:
                self._fail(f"empty chunk for {c.seq_id}")
            if c.start_pos != len(kv):
                self._fail(f"chunk for {c.seq_id} starts at {c.start_pos}, its KV holds {len(kv)} tokens")
            if c.start_pos + len(c.token_ids) > self.capacity[c.seq_id]:
                self._fail(f"chunk for {c.seq_id} writes up to {c.start_pos + len(c.token_ids)}, "
                           f"capacity {self.capacity[c.seq_id]}")
            kv.extend(c.token_ids)
            if c.sample:
                rows.append(fake_logits(kv, self.vocab_size))
        return rows

    # -- for assertions --------------------------------------------------------------------------------
    def chunks_of(self, seq_id: int) -> list[tuple[int, object]]:
        """(step index from 1, chunk) of every chunk computed for `seq_id`."""
        with self._lock:
            batches = list(self.batches)
        return [(i, c) for i, b in enumerate(batches, 1) for c in b.chunks if c.seq_id == seq_id]
