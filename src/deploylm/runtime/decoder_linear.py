"""Float linears with the weight stored transposed ([in, out], contiguous) for decoding.

Why by hand: at one token per sequence a decoder's linears are matrix-vector products that only stream weights.
On this project's CPU, torch's `F.linear` (weight [out, in]) runs them markedly slower than `x @ w_t` on the same
weights laid out [in, out] (benchmarks/decoder_kernels.py times both per shape); the transposed copy costs no
extra memory since the original weight is dropped (only a tied LM head keeps the embedding it shares).
"""

from __future__ import annotations

import torch
from torch import nn


class TransposedLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return x @ self.weight_t
        return torch.addmm(self.bias, x.reshape(-1, self.in_features), self.weight_t).view(*x.shape[:-1], -1)


def transpose_linears(model: nn.Module) -> int:
    """Swap every float nn.Linear of `model` for a TransposedLinear, in place; how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.is_floating_point():
                setattr(parent, name, TransposedLinear(child))
                swapped += 1
    return swapped
