"""The C++ decode-attention kernel (runtime/csrc/slab_decode.cpp) against torch's attention on the same slabs:
GQA, sliding windows, sequences of different lengths in one call, decode rows mixed with a prefill chunk; head
sizes the vectorised path covers (64, 128) and one it does not (16, the scalar loop)."""

from __future__ import annotations

import pytest
import torch

from deploylm.runtime import cpp_kernels
from deploylm.runtime.decoder_attention import Segment, StepLayout, slab_attention

LAYERS, HKV, GROUPS, D, CAP = 3, 2, 3, 16, 40
HEAD_SIZES = (16, 64, 128)


@pytest.fixture(scope="module")
def kernel():
    module = cpp_kernels.kernel()
    assert module is not None, f"the decode kernel did not build: {cpp_kernels.build_error()}"
    return module


def _slabs(starts, seed=0, d=D):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(LAYERS, 2, HKV, CAP, d, generator=g) for _ in starts]


def _reference(q, k_new, v_new, slabs, starts, layer, scale, window):
    """Plain torch: write the new K/V, then softmax(q K^T scale) V over [lo, start] for every sequence."""
    outs = []
    for b, (slab, s) in enumerate(zip(slabs, starts)):
        slab[layer, 0, :, s], slab[layer, 1, :, s] = k_new[b], v_new[b]
        lo = max(0, s + 1 - window) if window else 0
        keys = slab[layer, 0, :, lo:s + 1].repeat_interleave(GROUPS, 0)  # [H, L, D]
        vals = slab[layer, 1, :, lo:s + 1].repeat_interleave(GROUPS, 0)
        att = torch.softmax((q[b][:, None] * keys).sum(-1) * scale, -1)  # [H, L]
        outs.append((att[..., None] * vals).sum(1))
    return torch.stack(outs)


@pytest.mark.parametrize("d", HEAD_SIZES)
@pytest.mark.parametrize("window", [None, 4])
def test_kernel_equals_plain_attention(kernel, window, d):
    starts = [0, 7, 23, 39, 3, 15, 16]  # context lengths around the 16-position blocks of the vectorised path
    g = torch.Generator().manual_seed(1)
    q = torch.randn(len(starts), HKV * GROUPS, d, generator=g) * 2
    k_new, v_new = (torch.randn(len(starts), HKV, d, generator=g) for _ in range(2))
    mine, theirs = _slabs(starts, d=d), _slabs(starts, d=d)
    got = kernel.slab_decode_attention(q, k_new, v_new, mine, starts, 1, 0.25, -1 if window is None else window)
    want = _reference(q, k_new, v_new, theirs, starts, 1, 0.25, window)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(mine, theirs):  # the new K/V landed where the reference put them, nothing else moved
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_kernel_refuses_what_it_cannot_do(kernel):
    q, kv = torch.zeros(1, 6, D), torch.zeros(1, HKV, D)
    with pytest.raises(RuntimeError, match="float32"):
        kernel.slab_decode_attention(q.bfloat16(), kv.bfloat16(), kv.bfloat16(), _slabs([0]), [0], 0, 1.0, -1)
    with pytest.raises(RuntimeError, match="capacity"):
        kernel.slab_decode_attention(q, kv, kv, _slabs([0]), [CAP], 0, 1.0, -1)


class _Module:
    layer_idx = 2


@pytest.mark.parametrize("d", HEAD_SIZES)
@pytest.mark.parametrize("window", [None, 5])
def test_a_mixed_step_gives_the_same_attention_with_and_without_the_kernel(kernel, window, d):
    """One prefill chunk of 6 tokens between two decode rows, as the scheduler packs them."""
    starts, lengths = [9, 0, 30], [1, 6, 1]
    offsets = [0, 1, 7]
    g = torch.Generator().manual_seed(2)
    tokens = sum(lengths)
    query = torch.randn(1, HKV * GROUPS, tokens, d, generator=g)
    key, value = (torch.randn(1, HKV, tokens, d, generator=g) for _ in range(2))
    outs = []
    for k in (kernel, None):
        slabs = _slabs(starts, seed=3, d=d)
        layout = StepLayout([Segment(sl, s, o, n) for sl, s, o, n in zip(slabs, starts, offsets, lengths)], k)
        out, _ = slab_attention(_Module(), query, key, value, scaling=0.3, sliding_window=window,
                                deploylm_layout=layout)
        outs.append((out, slabs))
    (with_kernel, slabs_a), (without, slabs_b) = outs
    torch.testing.assert_close(with_kernel, without, rtol=1e-5, atol=1e-5)
    for a, b in zip(slabs_a, slabs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
