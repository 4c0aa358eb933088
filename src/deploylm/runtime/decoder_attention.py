"""Attention over per-sequence KV slabs, plugged into transformers' own decoder modules.

Why by hand: transformers' attention functions take one padded batch with one cache; continuous batching needs
every sequence of a step (a prefill chunk of one, single decode tokens of others) packed into one forward, each
attending to its own KV. transformers lets a model use a registered attention function
(`AttentionInterface.register`); an implementation name with no mask function registered makes the model skip
mask building entirely, so the packed forward costs nothing extra. The modules (projections, rotary, norms,
Gemma's q/k norms and soft-capping) stay transformers' own, so no architecture is assumed here.

KV layout: each sequence owns one tensor [layers, 2, kv_heads, capacity, head_dim] (a "slab"). Attention reads
it in place (no gather per step, which a block table would need on CPU); the scheduler decides capacities in
whole blocks, so the memory bound holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTN_IMPLEMENTATION = "deploylm_slab"


@dataclass
class Segment:
    slab: torch.Tensor  # [layers, 2, kv_heads, capacity, head_dim]
    start: int  # tokens already in the slab
    offset: int  # where this sequence's tokens sit in the packed forward
    length: int


class StepLayout:
    """The packed forward's segments, read by every layer's attention call."""

    def __init__(self, segments: list[Segment]):
        self.segments = segments
        self.masks: dict[tuple, torch.Tensor] = {}  # per (start, length, window): shared across layers

    def mask(self, start: int, length: int, lo: int, window: int | None, dtype) -> torch.Tensor | None:
        """Additive mask [length, start+length-lo] for a chunk: causal, and within the sliding window."""
        if length == 1:
            return None  # one query token sees all of [lo, start]: lo already applies the window
        key = (start, length, lo, window, dtype)
        cached = self.masks.get(key)
        if cached is None:
            q = torch.arange(start, start + length).unsqueeze(1)
            k = torch.arange(lo, start + length).unsqueeze(0)
            allowed = k <= q
            if window is not None:
                allowed &= k > q - window
            cached = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
            self.masks[key] = cached
        return cached


def slab_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask=None,
                   scaling: float | None = None, dropout: float = 0.0, sliding_window: int | None = None,
                   softcap: float | None = None, deploylm_layout: StepLayout | None = None, **_):
    """query [1, H, T, D], key/value [1, Hkv, T, D] (rotary applied) -> ([1, T, H, D], None).

    Writes each segment's new keys/values into its slab, then attends its queries over the slab. Query heads
    are grouped by their KV head (GQA) so keys are never repeated: q [Hkv, groups * n, D] against k [Hkv, L, D]."""
    if deploylm_layout is None:
        raise RuntimeError(f"{ATTN_IMPLEMENTATION} attention runs only inside deploylm's decoder runner")
    if softcap is not None:
        raise NotImplementedError("attention logit soft-capping is not supported by deploylm's decoder runner")
    layer = module.layer_idx
    _, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    out = query.new_empty((1, query.shape[2], heads, dim))
    for seg in deploylm_layout.segments:
        s, n, o = seg.start, seg.length, seg.offset
        kv = seg.slab[layer]
        kv[0, :, s:s + n] = key[0, :, o:o + n]
        kv[1, :, s:s + n] = value[0, :, o:o + n]
        end = s + n
        lo = max(0, end - (sliding_window + n - 1)) if sliding_window is not None else 0
        q = query[0, :, o:o + n].reshape(kv_heads, groups * n, dim)
        mask = deploylm_layout.mask(s, n, lo, sliding_window, query.dtype)
        if mask is not None:
            mask = mask.repeat(groups, 1)
        # 4-D inputs: torch's CPU flash kernel takes them (3-D ones fall back to the slower reference kernel).
        att = F.scaled_dot_product_attention(q[None], kv[None, 0, :, lo:end], kv[None, 1, :, lo:end],
                                             attn_mask=mask, scale=scaling)
        out[0, o:o + n] = att[0].reshape(heads, n, dim).transpose(0, 1)
    return out, None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, slab_attention)
