"""Length-aware batching: sort by length, cut batches, pad each only to its own longest row.
SST-2 sentences average ~25 word pieces; padding them all to 128 wastes ~5x the compute."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def pad_batch(features: Sequence[dict[str, list[int]]], pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    width = max(len(f["input_ids"]) for f in features)
    out = {}
    for name in names:
        fill = pad_id if name == "input_ids" else 0
        arr = np.full((len(features), width), fill, dtype=np.int64)
        for i, f in enumerate(features):
            seq = f.get(name)
            if seq is None:
                continue
            arr[i, : len(seq)] = seq
        out[name] = arr
    return out


def length_batches(
    features: Sequence[dict[str, list[int]]], batch_size: int, max_tokens: int | None = None, sort: bool = True
) -> Iterator[list[int]]:
    """Yield lists of indices into `features`; each batch holds at most batch_size rows and,
    if max_tokens is set, at most max_tokens padded tokens."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"])) if sort else list(range(len(features)))
    batch: list[int] = []
    for idx in order:
        longest = max([len(features[j]["input_ids"]) for j in batch] + [len(features[idx]["input_ids"])])
        too_many_tokens = max_tokens is not None and batch and longest * (len(batch) + 1) > max_tokens
        if batch and (len(batch) >= batch_size or too_many_tokens):
            yield batch
            batch = []
        batch.append(idx)
    if batch:
        yield batch
