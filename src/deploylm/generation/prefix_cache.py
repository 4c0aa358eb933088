"""Prefix cache bookkeeping (pure Python): which prompt prefixes have their KV kept, found by block hashes.

A prompt is cut into blocks of `block_size` tokens; block i's hash chains the hash of block i-1 with its tokens
(as vLLM does), so equal hashes mean equal prefixes. An entry holds the KV of one prompt's first full blocks in the
runner, under an id from the same namespace as sequences; a lookup returns the entry and how many tokens of it
match. Entries count against the KV budget and are evicted least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


def block_hashes(ids: list[int], block_size: int) -> list[int]:
    out, prev = [], 0
    for i in range(len(ids) // block_size):
        prev = hash((prev, tuple(ids[i * block_size:(i + 1) * block_size])))
        out.append(prev)
    return out


@dataclass
class Entry:
    entry_id: int
    hashes: list[int]
    blocks: int
    ready_at: int  # first step whose copies may read it (its KV is written at the end of the step that made it)
    hits: int = 0


@dataclass
class PrefixCache:
    block_size: int
    entries: "OrderedDict[int, Entry]" = field(default_factory=OrderedDict)
    index: dict[int, tuple[int, int]] = field(default_factory=dict)  # block hash -> (entry id, block index)
    queries: int = 0
    hit_tokens: int = 0
    query_tokens: int = 0

    @property
    def blocks(self) -> int:
        return sum(e.blocks for e in self.entries.values())

    def lookup(self, ids: list[int], step: int) -> tuple[int, int] | None:
        """(entry id, tokens) of the longest cached prefix of `ids`, leaving at least one token to compute (its
        logits are needed to sample), or None."""
        hashes = block_hashes(ids[:-1], self.block_size)
        best = None
        for i, h in enumerate(hashes):
            hit = self.index.get(h)
            if hit is None or self.entries[hit[0]].ready_at > step:
                break
            best = (hit[0], (i + 1) * self.block_size)
        self.queries += 1
        self.query_tokens += len(ids)
        if best is not None:
            self.entries.move_to_end(best[0])
            self.entries[best[0]].hits += 1
            self.hit_tokens += best[1]
        return best

    def missing_blocks(self, ids: list[int]) -> int:
        """How many of the prompt's full blocks are not cached yet (0: nothing worth a new entry)."""
        hashes = block_hashes(ids, self.block_size)
        return sum(1 for h in hashes if h not in self.index)

    def add(self, entry_id: int, ids: list[int], step: int) -> Entry:
        hashes = block_hashes(ids, self.block_size)
        entry = Entry(entry_id, hashes, len(hashes), ready_at=step + 1)
        self.entries[entry_id] = entry
        for i, h in enumerate(hashes):
            self.index.setdefault(h, (entry_id, i))
        return entry

    def evict_one(self, pinned: set[int]) -> Entry | None:
        """Drop the least recently used entry not pinned by this step; its index keys go with it."""
        for entry_id in self.entries:
            if entry_id not in pinned:
                return self.remove(entry_id)
        return None

    def remove(self, entry_id: int) -> Entry | None:
        entry = self.entries.pop(entry_id, None)
        if entry is not None:
            for h in entry.hashes:
                if self.index.get(h, (None,))[0] == entry_id:
                    del self.index[h]
            for other in self.entries.values():  # another entry with the same leading blocks takes them over
                for i, h in enumerate(other.hashes):
                    self.index.setdefault(h, (other.entry_id, i))
        return entry

    def hit_rate(self) -> float:
        """Share of prompt tokens served from the cache since start."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0
