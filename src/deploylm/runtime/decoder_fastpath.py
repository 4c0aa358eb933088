"""A lean forward for Llama-shaped decoders (Llama, Qwen2): transformers' own modules and weights,
called with fewer ops per layer.

Why by hand: at one token per sequence a decode step is dominated not by its matrix products but by the
per-op and per-module overhead of transformers' layer code (views, transposes, kwargs plumbing, one call per
projection). torch.compile would remove that overhead, but on this project's CPUs its guards cost as much
per layer as they save, and compiling the whole model takes minutes (both measured while building this).
Here each layer is

    h  = input_layernorm(x)                     # the module itself: same numbers as transformers
    qkv = qkv_proj(h)                           # q, k and v projections fused into one matrix product
    q, k = rotary(q, k)                         # transformers' formula, on views of qkv
    a  = slab_attention(q, k, v)                # the runner's attention over per-sequence KV slabs
    x  = x + o_proj(a)
    h  = post_attention_layernorm(x)
    x  = x + down_proj(act(gate) * up)          # gate and up fused into one matrix product

With deploylm's C++ ops (runtime/csrc/decoder_ops.cpp; float32 models), the norms, the residual adds and the
rotary embedding are one call each (`add_rms_norm_` folds a residual add into the next norm), and a step of only
decode tokens calls the decode-attention kernel directly: about a dozen ops per layer instead of sixty-odd.

A model whose layers do anything else (Gemma's extra norms and scaled embeddings, q/k norms, soft-capping,
per-layer-type rotary) keeps transformers' forward: `fast_path_for` returns None for it.
"""

from __future__ import annotations

import torch
from torch import nn

from .decoder_attention import StepLayout, slab_attention

# Decoder classes whose model and layer forward are exactly the sequence in the module docstring.
FAST_MODELS = ("LlamaModel", "Qwen2Model")  # tested; Mistral passes its sliding window per call: not yet
_LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp")


def _is_plain_layer(layer: nn.Module) -> bool:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if any(not hasattr(layer, p) for p in _LAYER_PARTS):
        return False
    if any(hasattr(attn, n) for n in ("q_norm", "k_norm")) or getattr(attn, "softcap", None):
        return False
    return all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling", "head_dim")) and \
        all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn"))


def fast_path_for(model: nn.Module, ops=None) -> "LeanDecoder | None":
    """A LeanDecoder for `model` (a *ForCausalLM) when every layer is Llama-shaped, else None; `ops` as in
    LeanDecoder."""
    body = getattr(model, "model", None)
    if type(body).__name__ not in FAST_MODELS or not hasattr(model, "lm_head"):
        return None
    if not all(hasattr(body, n) for n in ("embed_tokens", "rotary_emb", "layers", "norm")):
        return None
    if not all(_is_plain_layer(layer) for layer in body.layers):
        return None
    return LeanDecoder(model, ops)


def fuse_linears(parts: list[nn.Module]) -> nn.Module:
    """One linear computing the concatenation of `parts`' outputs (same input): float nn.Linear or Int8Linear."""
    from ..optimize.weight_int8 import Int8Linear

    if all(type(p) is nn.Linear for p in parts):
        w = torch.cat([p.weight.detach() for p in parts])
        fused = nn.Linear(w.shape[1], w.shape[0], bias=parts[0].bias is not None, dtype=w.dtype)
        fused.weight = nn.Parameter(w, requires_grad=False)
        if fused.bias is not None:
            fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
        return fused
    if all(isinstance(p, Int8Linear) for p in parts) and len({p.rotation_block for p in parts}) == 1:
        weights = [p.int8_weight() for p in parts]
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        return Int8Linear.from_int8(torch.cat([w for w, _ in weights]), torch.cat([s for _, s in weights]), bias,
                                    parts[0].rotation_block)
    raise TypeError(f"cannot fuse linears of types {sorted({type(p).__name__ for p in parts})}")


def _norm_parts(norm: nn.Module) -> tuple[torch.Tensor, float] | None:
    """(weight, eps) of a plain RMSNorm (x / sqrt(mean(x^2) + eps) * weight), else None."""
    weight, eps = getattr(norm, "weight", None), getattr(norm, "variance_epsilon", None)
    if type(norm).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm") or weight is None or eps is None:
        return None
    return weight, float(eps)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Layer:
    """One layer with its projections fused in place: q/k/v become `self_attn.qkv_proj`, gate/up become
    `mlp.gate_up_proj` (the parts are dropped, so memory does not grow). The linears are looked up on the layer
    at every call, so a later swap of them (the runner's packed linears) takes effect here."""

    def __init__(self, layer: nn.Module):
        attn, mlp = layer.self_attn, layer.mlp
        self.attn, self.mlp = attn, mlp
        self.in_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.layer_idx, self.scaling = attn.layer_idx, attn.scaling
        self.sliding_window = getattr(attn, "sliding_window", None)
        self.head_dim = attn.head_dim
        self.q_width = attn.q_proj.out_features
        self.kv_width = attn.k_proj.out_features
        self.inter = mlp.gate_proj.out_features
        self.act = mlp.act_fn
        self.rotated_heads = (self.q_width + self.kv_width) // self.head_dim
        self.in_parts, self.post_parts = _norm_parts(self.in_norm), _norm_parts(self.post_norm)
        attn.qkv_proj = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        mlp.gate_up_proj = fuse_linears([mlp.gate_proj, mlp.up_proj])
        for name in ("q_proj", "k_proj", "v_proj"):
            delattr(attn, name)
        for name in ("gate_proj", "up_proj"):
            delattr(mlp, name)

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: StepLayout) -> torch.Tensor:
        tokens, d = x.shape[0], self.head_dim
        qkv = self.attn.qkv_proj(self.in_norm(x))
        q = qkv[:, :self.q_width].view(tokens, -1, d)
        k = qkv[:, self.q_width:self.q_width + self.kv_width].view(tokens, -1, d)
        v = qkv[:, self.q_width + self.kv_width:].view(tokens, -1, d)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out, _ = slab_attention(self, q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                scaling=self.scaling, sliding_window=self.sliding_window, deploylm_layout=layout)
        x = x + self.attn.o_proj(out.reshape(tokens, -1))
        gate_up = self.mlp.gate_up_proj(self.post_norm(x))
        return x + self.mlp.down_proj(self.act(gate_up[:, :self.inter]) * gate_up[:, self.inter:])


    def with_ops(self, ops, x: torch.Tensor, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 layout: StepLayout, next_norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        """The same layer on deploylm's C++ ops: `h` is this layer's normed input, `x` the residual stream
        (updated in place); returns `next_norm` applied to the new x (the next layer's input norm, or the
        model's final norm)."""
        tokens, d = x.shape[0], self.head_dim
        qkv = self.attn.qkv_proj(h)
        ops.rotary_(qkv, cos, sin, self.rotated_heads, d)
        q = qkv[:, :self.q_width].view(tokens, -1, d)
        k = qkv[:, self.q_width:self.q_width + self.kv_width].view(tokens, -1, d)
        v = qkv[:, self.q_width + self.kv_width:].view(tokens, -1, d)
        if layout.all_decode:  # every row one sequence's next token: the kernel writes K/V and attends in place
            window = -1 if self.sliding_window is None else int(self.sliding_window)
            out = layout.kernel.slab_decode_attention(q, k, v, layout.decode_slabs, layout.decode_starts,
                                                      self.layer_idx, float(self.scaling), window)
        else:
            out, _ = slab_attention(self, q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                    scaling=self.scaling, sliding_window=self.sliding_window, deploylm_layout=layout)
        h = ops.add_rms_norm_(x, self.attn.o_proj(out.reshape(tokens, -1)), *self.post_parts)
        gate_up = self.mlp.gate_up_proj(h)
        mlp_out = self.mlp.down_proj(self.act(gate_up[:, :self.inter]) * gate_up[:, self.inter:])
        return ops.add_rms_norm_(x, mlp_out, *next_norm)


class LeanDecoder:
    """The packed forward of a Llama-shaped causal LM: token ids [T] -> logits of the `keep` rows. `ops`: the C++
    module of runtime/cpp_kernels.py (float32 models), or None for torch ops throughout."""

    def __init__(self, model: nn.Module, ops=None):
        body = model.model
        self.model, self.embed, self.rotary, self.norm = model, body.embed_tokens, body.rotary_emb, body.norm
        self.layers = [_Layer(layer) for layer in body.layers]
        parts = [p for layer in self.layers for p in (layer.in_parts, layer.post_parts)] + [_norm_parts(self.norm)]
        self.ops = ops if all(p is not None for p in parts) else None

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor,
                 layout: StepLayout) -> torch.Tensor:
        x = self.embed(ids)  # [T, hidden]
        cos, sin = self.rotary(x[None], positions[None])  # [1, T, head_dim] each
        ops = self.ops if x.dtype == torch.float32 else None
        if ops is not None:
            x = x.contiguous()
            cos, sin = cos[0].contiguous(), sin[0].contiguous()
            h = ops.rms_norm(x, *self.layers[0].in_parts)
            final = _norm_parts(self.norm)
            for i, layer in enumerate(self.layers):
                nxt = self.layers[i + 1].in_parts if i + 1 < len(self.layers) else final
                h = layer.with_ops(ops, x, h, cos, sin, layout, nxt)
            return self.model.lm_head(h[keep])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # broadcast over heads
        for layer in self.layers:
            x = layer(x, cos, sin, layout)
        return self.model.lm_head(self.norm(x[keep]))
