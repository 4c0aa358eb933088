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
    """The packed forward's segments, read by every layer's attention call. `kernel`: the compiled decode-attention
    module (runtime/cpp_kernels.py) or None; with it, every one-token (decode) segment of a float32 step is
    attended in one call per layer instead of one SDPA call per sequence."""

    def __init__(self, segments: list[Segment], kernel=None):
        self.segments = segments
        self.masks: dict[tuple, torch.Tensor] = {}  # per (start, length, window): shared across layers
        self.kernel = kernel
        decode = [i for i, s in enumerate(segments) if s.length == 1]
        self.decode = decode if kernel is not None and decode else []
        chosen = set(self.decode)
        self.others = [s for i, s in enumerate(segments) if i not in chosen]
        self.all_decode = len(self.decode) == len(segments)
        self.decode_slabs = [segments[i].slab for i in self.decode]
        self.decode_starts = [segments[i].start for i in self.decode]
        self.decode_rows = torch.tensor([segments[i].offset for i in self.decode], dtype=torch.long)

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
    if deploylm_layout.decode and query.dtype == torch.float32:
        _decode_in_one_call(deploylm_layout, layer, query, key, value, out, scaling, sliding_window)
        segments = deploylm_layout.others
    else:
        segments = deploylm_layout.segments
    for seg in segments:
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


def _decode_in_one_call(layout: StepLayout, layer: int, query, key, value, out, scaling, window) -> None:
    """Every decode segment of the step through the C++ kernel: it writes their new K/V into their slabs and
    attends in place (runtime/csrc/slab_decode.cpp)."""
    if layout.all_decode:  # the common case: rows are the segments in order
        q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)
    else:
        rows = layout.decode_rows
        q, k, v = (t[0].index_select(1, rows).transpose(0, 1) for t in (query, key, value))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    res = layout.kernel.slab_decode_attention(q.contiguous(), k.contiguous(), v.contiguous(), layout.decode_slabs,
                                              layout.decode_starts, layer, float(scale),
                                              -1 if window is None else int(window))
    if layout.all_decode:
        out[0] = res
    else:
        out[0].index_copy_(0, layout.decode_rows, res)


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, slab_attention)
