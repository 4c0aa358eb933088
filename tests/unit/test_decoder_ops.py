"""The lean forward's C++ ops (runtime/csrc/decoder_ops.cpp) against transformers' own Llama modules on the same
inputs: RMSNorm, the residual add folded into the next norm, and the rotary embedding applied in place to the
query and key heads of fused qkv rows (the value heads untouched)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from deploylm.runtime import cpp_kernels


@pytest.fixture(scope="module")
def ops():
    module = cpp_kernels.kernel()
    assert module is not None, f"the C++ kernels did not build (`make install` builds them): {cpp_kernels.build_error()}"
    return module


def _norm(hidden: int, seed: int) -> LlamaRMSNorm:
    torch.manual_seed(seed)
    norm = LlamaRMSNorm(hidden, eps=1e-5)
    norm.weight.data = torch.rand(hidden) + 0.5
    return norm


@pytest.mark.parametrize("tokens,hidden", [(1, 64), (7, 576), (130, 96)])
def test_rms_norm_is_transformers_rmsnorm(ops, tokens, hidden):
    norm = _norm(hidden, tokens)
    x = torch.randn(tokens, hidden) * 3
    x[0, 1] = 80.0  # an outlier channel
    with torch.no_grad():
        torch.testing.assert_close(ops.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x), rtol=2e-6, atol=1e-6)


def test_add_rms_norm_updates_the_residual_in_place_and_norms_it(ops):
    norm = _norm(96, 1)
    x, r = torch.randn(5, 96), torch.randn(5, 96)
    expected_x = x + r
    with torch.no_grad():
        expected = norm(expected_x)
        out = ops.add_rms_norm_(x, r, norm.weight, norm.variance_epsilon)
    assert torch.equal(x, expected_x)  # the same float additions, in place
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=1e-6)


def test_rotary_matches_transformers_on_q_and_k_and_leaves_v(ops):
    tokens, q_heads, kv_heads, d = 6, 4, 2, 16
    torch.manual_seed(2)
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * d)
    angles = torch.rand(tokens, d // 2) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    q = qkv[:, :q_heads * d].view(tokens, q_heads, d).transpose(0, 1)[None]
    k = qkv[:, q_heads * d:(q_heads + kv_heads) * d].view(tokens, kv_heads, d).transpose(0, 1)[None]
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    v_before = qkv[:, (q_heads + kv_heads) * d:].clone()
    ops.rotary_(qkv, cos, sin, q_heads + kv_heads, d)
    got_q = qkv[:, :q_heads * d].view(tokens, q_heads, d).transpose(0, 1)[None]
    got_k = qkv[:, q_heads * d:(q_heads + kv_heads) * d].view(tokens, kv_heads, d).transpose(0, 1)[None]
    torch.testing.assert_close(got_q, ref_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_k, ref_k, rtol=1e-6, atol=1e-6)
    assert torch.equal(qkv[:, (q_heads + kv_heads) * d:], v_before)


def test_bad_inputs_are_refused(ops):
    w = torch.ones(8)
    with pytest.raises(RuntimeError, match="weight must be float32"):
        ops.rms_norm(torch.zeros(2, 16), w, 1e-5)
    with pytest.raises(RuntimeError, match="differ in shape"):
        ops.add_rms_norm_(torch.zeros(2, 8), torch.zeros(3, 8), w, 1e-5)
    with pytest.raises(RuntimeError, match="heads do not fit"):
        ops.rotary_(torch.zeros(2, 32), torch.zeros(2, 16), torch.zeros(2, 16), 3, 16)
