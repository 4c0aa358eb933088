"""Float linears of a decoder, with their weights packed for decoding.

Why by hand: at one token per sequence a decoder's linears are matrix-vector products that only stream weights
from memory. On this project's CPU torch's fp32 GEMV reads them well below the machine's bandwidth, and `F.linear`
(weight [out, in]) more so than `x @ w_t` (benchmarks/decoder_kernels.py times them per shape). So each weight is
stored once, as panels of 32 output channels ([panels, in, 32], k-major inside a panel: one sequential stream per
panel), and:

- a call with up to FEW_ROWS rows (a decode step) runs deploylm's C++ `float_linear` (runtime/csrc/
  float_linear.cpp), which streams the panels with a software prefetch and keeps every row's sums in registers;
- a call with more rows (a prefill chunk), or where the kernel is not built, runs torch's matmul on the same
  panels (a batched product, one per panel), which is as fast as a plain GEMM at those row counts.

The packed copy replaces the original weight, so memory does not grow (only a tied LM head keeps the embedding it
shares). bf16 weights stay bf16 in the panels: the kernel widens them as it loads them, the activations stay fp32
(the decoder runner then computes everything else in fp32 too: decoder_runner._widen_all_but_linears).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 32  # output channels per panel (float_linear.cpp's kWidth)
# Rows up to which the C++ kernel runs: it re-reads a panel (from cache) for every 8 rows, so its lead over a
# GEMM shrinks as rows grow (benchmarks/decoder_kernels.py).
FEW_ROWS = 16


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, kernel=None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = kernel  # runtime/cpp_kernels.float_kernel() or None
        w = linear.weight.detach()
        padded = -(-self.out_features // WIDTH) * WIDTH
        w_t = torch.zeros(self.in_features, padded, dtype=w.dtype)
        w_t[:, :self.out_features] = w.t()
        self.packed = nn.Parameter(w_t.view(self.in_features, padded // WIDTH, WIDTH).permute(1, 0, 2).contiguous(),
                                   requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone(),
                                                                  requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.kernel is not None and rows.shape[0] <= FEW_ROWS:
            y = self.kernel.float_linear(rows.float(), self.packed, self.bias, self.out_features)
        else:
            n = rows.shape[0]  # in the activations' dtype: bf16 panels of a float32 step are widened for the call
            y = torch.matmul(rows, self.packed.to(rows.dtype)).permute(1, 0, 2).reshape(n, -1)
            y = y[:, :self.out_features].float()
            if self.bias is not None:
                y = y + self.bias
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def weight(self) -> torch.Tensor:
        """The [out, in] weight, unpacked (tests, tools)."""
        full = self.packed.permute(1, 0, 2).reshape(self.in_features, -1)
        return full[:, :self.out_features].t().contiguous()


def pack_linears(model: nn.Module, kernel=None) -> int:
    """Swap every float nn.Linear of `model` for a PackedLinear, in place; how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.is_floating_point():
                setattr(parent, name, PackedLinear(child, kernel))
                swapped += 1
    return swapped
