"""The continuous-batching scheduler: a pure decision, no model and no torch.

Each step: every running sequence gets its next tokens (1 when decoding, a chunk when (re)prefilling) under a
per-step token budget, then waiting sequences are admitted (FIFO) while budget, sequence slots and KV blocks
last. KV is counted in blocks of `block_size` tokens against a fixed total; a running sequence that needs a block
when none is free first evicts prefix-cache entries, then preempts the most recently admitted sequence, which goes
back to the front of the queue and is recomputed (prompt + what it had generated) when there is room again — the
process never allocates past its budget and never waits on memory that cannot come.

The engine drives it: `plan = schedule()` -> runner.step(plan.batch) -> `advance(plan)`, then it appends sampled
tokens with `append()` and ends sequences with `finish()`.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from ..errors import ConfigError, RequestError
from .prefix_cache import PrefixCache
from .types import KVCopy, SeqChunk, StepBatch

WAITING, RUNNING, FINISHED = "waiting", "running", "finished"


@dataclass(frozen=True)
class SchedulerConfig:
    kv_tokens: int = 65536  # KV budget in tokens (the engine converts --kv-cache-mib with the model's bytes/token)
    block_size: int = 16
    max_num_seqs: int = 64  # sequences computed together in one step
    max_step_tokens: int = 512  # tokens per step: prefill chunks + one per decoding sequence
    max_waiting: int = 256  # queued sequences before new requests get 429
    growth_blocks: int = 4  # a sequence's KV grows by at least this many blocks (fewer slab copies)
    prefix_caching: bool = True

    def __post_init__(self):
        if self.max_step_tokens < self.max_num_seqs:
            raise ConfigError(f"max_step_tokens ({self.max_step_tokens}) must be at least max_num_seqs "
                              f"({self.max_num_seqs}): every running sequence needs one token per step.")
        if self.kv_tokens < self.block_size:
            raise ConfigError(f"The KV budget ({self.kv_tokens} tokens) is smaller than one block ({self.block_size}).")

    @property
    def total_blocks(self) -> int:
        return self.kv_tokens // self.block_size


@dataclass
class Seq:
    seq_id: int
    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    index: int = 0  # choice index within its request
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose KV is in the runner
    blocks: int = 0  # KV blocks reserved
    status: str = WAITING
    cached_tokens: int = 0
    preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass
class StepPlan:
    batch: StepBatch
    seqs: list[Seq]  # one per chunk, in chunk order
    preempted: list[Seq] = field(default_factory=list)
    step: int = 0

    def sampling(self) -> list[Seq]:
        return [s for s, c in zip(self.seqs, self.batch.chunks) if c.sample]


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.cache = PrefixCache(config.block_size)
        self._ids = itertools.count(1)
        self._to_free: list[int] = []
        self.step_no = 0
        self.preemptions = 0

    # -- intake --------------------------------------------------------------------------------------
    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def make_seqs(self, request_id: str, prompt_ids: list[int], max_tokens: int, n: int = 1,
                  in_flight: int = 0) -> list[Seq]:
        """A request's n sequences, not queued yet; RequestError 400 if it can never fit in the KV budget, 429
        if the waiting queue is full (`in_flight`: sequences on their way into it)."""
        cfg = self.config
        need = self.blocks_for(len(prompt_ids) + max_tokens)
        if need > cfg.total_blocks:
            raise RequestError(f"The prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) needs "
                               f"{need * cfg.block_size} tokens of KV cache, more than the server's whole budget of "
                               f"{cfg.total_blocks * cfg.block_size} tokens (--kv-cache-tokens); shorten the prompt "
                               "or lower max_tokens.", 400)
        if len(self.waiting) + in_flight + n > cfg.max_waiting:
            raise RequestError(f"Server is at capacity: {len(self.waiting)} sequences already wait "
                               f"(--max-waiting {cfg.max_waiting}). Retry later.", 429)
        return [Seq(self.new_id(), request_id, list(prompt_ids), max_tokens, index=i) for i in range(n)]

    def add(self, request_id: str, prompt_ids: list[int], max_tokens: int, n: int = 1) -> list[Seq]:
        """make_seqs, queued."""
        seqs = self.make_seqs(request_id, prompt_ids, max_tokens, n)
        self.waiting.extend(seqs)
        return seqs

    def new_id(self) -> int:
        return next(self._ids)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._to_free)

    # -- the decision --------------------------------------------------------------------------------
    def used_blocks(self) -> int:
        return sum(s.blocks for s in self.running) + self.cache.blocks

    def free_blocks(self) -> int:
        return self.config.total_blocks - self.used_blocks()

    def schedule(self) -> StepPlan:
        self.step_no += 1
        plan = StepPlan(StepBatch([], free=self._to_free), [], step=self.step_no)
        self._to_free = []
        pinned: set[int] = set()
        budget = self.config.max_step_tokens
        for seq in list(self.running):
            if budget <= 0:
                break
            if seq.status != RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._grow(seq, seq.num_computed + n, plan, pinned):
                continue  # it was preempted itself: nothing else could give way
            self._add_chunk(plan, seq, n, pinned)
            budget -= n
        while self.waiting and budget > 0 and not plan.preempted and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not self._admit(seq, budget, plan, pinned):
                break
            self.waiting.popleft()
            self.running.append(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            self._add_chunk(plan, seq, n, pinned)
            budget -= n
        return plan

    def _add_chunk(self, plan: StepPlan, seq: Seq, n: int, pinned: set[int]) -> None:
        start = seq.num_computed
        done = start + n == seq.num_tokens
        plan.batch.chunks.append(SeqChunk(seq.seq_id, seq.all_ids()[start:start + n], start, sample=done))
        plan.seqs.append(seq)
        prompt_len = len(seq.prompt_ids)
        if self.config.prefix_caching and start < prompt_len <= start + n and not seq.output_ids:
            self._snapshot(seq, plan, pinned)

    def _snapshot(self, seq: Seq, plan: StepPlan, pinned: set[int]) -> None:
        """Keep this prompt's full blocks as a cache entry once its prefill ends (copied after the step)."""
        cache = self.cache
        if cache.missing_blocks(seq.prompt_ids) == 0:
            return
        blocks = len(seq.prompt_ids) // self.config.block_size
        while self.free_blocks() < blocks and self._evict(pinned, plan):
            pass
        if self.free_blocks() < blocks:
            return  # no room to cache it: not an error
        entry = cache.add(self.new_id(), seq.prompt_ids, self.step_no)
        pinned.add(entry.entry_id)
        plan.batch.reserve[entry.entry_id] = blocks * self.config.block_size
        plan.batch.snapshots.append(KVCopy(seq.seq_id, entry.entry_id, blocks * self.config.block_size))

    def _admit(self, seq: Seq, budget: int, plan: StepPlan, pinned: set[int]) -> bool:
        """Reserve KV for a waiting sequence's first chunk (restoring a cached prefix); False if no room."""
        hit = None
        if self.config.prefix_caching and seq.num_computed == 0 and not seq.output_ids:
            hit = self.cache.lookup(seq.prompt_ids, self.step_no)
        start = hit[1] if hit else 0
        n = min(seq.num_tokens - start, budget)
        need = self.blocks_for(start + n)
        while self.free_blocks() < need and self._evict(pinned | ({hit[0]} if hit else set()), plan):
            pass
        if self.free_blocks() < need:
            return False
        seq.status, seq.blocks = RUNNING, need
        plan.batch.reserve[seq.seq_id] = need * self.config.block_size
        if hit:
            pinned.add(hit[0])
            seq.num_computed = seq.cached_tokens = start
            plan.batch.copies.append(KVCopy(hit[0], seq.seq_id, start))
        return True

    def _grow(self, seq: Seq, tokens: int, plan: StepPlan, pinned: set[int]) -> bool:
        """Make room for `tokens` of KV for a running sequence; preempt others (newest first) if needed.
        False when `seq` itself had to be preempted."""
        need = self.blocks_for(tokens)
        if need <= seq.blocks:
            return True
        ceiling = self.blocks_for(len(seq.prompt_ids) + seq.max_tokens)
        want = min(max(need, seq.blocks + self.config.growth_blocks), max(ceiling, need))
        while self.free_blocks() < need - seq.blocks:
            if self._evict(pinned, plan):
                continue
            victim = next((s for s in reversed(self.running) if s.status == RUNNING), None)
            self._preempt(victim, plan)
            if victim is seq:
                return False
        want = min(want, seq.blocks + self.free_blocks())
        seq.blocks = want
        plan.batch.reserve[seq.seq_id] = want * self.config.block_size
        return True

    def _evict(self, pinned: set[int], plan: StepPlan) -> bool:
        """Drop the least recently used unpinned cache entry and free its KV in the runner; False if none."""
        entry = self.cache.evict_one(pinned)
        if entry is None:
            return False
        plan.batch.free.append(entry.entry_id)
        return True

    def _preempt(self, seq: Seq, plan: StepPlan) -> None:
        self.running.remove(seq)
        if seq in plan.seqs:  # scheduled earlier in this step: take its chunk back
            k = plan.seqs.index(seq)
            del plan.seqs[k], plan.batch.chunks[k]
        plan.batch.free.append(seq.seq_id)
        plan.batch.reserve.pop(seq.seq_id, None)
        for snap in [c for c in plan.batch.snapshots if c.src == seq.seq_id]:  # its prompt will not be complete
            plan.batch.snapshots.remove(snap)
            plan.batch.reserve.pop(snap.dst, None)
            self.cache.remove(snap.dst)
        seq.status, seq.blocks, seq.num_computed = WAITING, 0, 0
        seq.preemptions += 1
        self.preemptions += 1
        plan.preempted.append(seq)
        self.waiting.appendleft(seq)

    # -- after the step ------------------------------------------------------------------------------
    def advance(self, plan: StepPlan) -> None:
        for seq, chunk in zip(plan.seqs, plan.batch.chunks):
            seq.num_computed += len(chunk.token_ids)

    def step_failed(self, plan: StepPlan) -> None:
        """The runner raised on `plan`: the cache entries it was to fill hold no KV, so drop them (and free them)
        before a later request with the same prompt copies from them."""
        for snap in plan.batch.snapshots:
            if self.cache.remove(snap.dst) is not None:
                self._to_free.append(snap.dst)

    def append(self, seq: Seq, token_id: int) -> None:
        seq.output_ids.append(token_id)

    def finish(self, seq: Seq) -> None:
        """Release a sequence (done, aborted, timed out); its KV is freed at the start of the next step."""
        if seq.status == FINISHED:
            return
        if seq.status == RUNNING:
            self.running.remove(seq)
            self._to_free.append(seq.seq_id)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status, seq.blocks = FINISHED, 0

    def stats(self) -> dict:
        total = self.config.total_blocks * self.config.block_size
        return {"running": len(self.running), "waiting": len(self.waiting),
                "kv_used_tokens": self.used_blocks() * self.config.block_size, "kv_total_tokens": total,
                "prefix_cache_tokens": self.cache.blocks * self.config.block_size,
                "prefix_cache_hit_rate": self.cache.hit_rate(), "preemptions": self.preemptions}
