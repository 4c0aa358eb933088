"""How an Int8Linear multiplies: the same int8 weights and scales (optimize/weight_int8.py) on one of two kernels,
chosen once per process when the weights are set.

- `VnniMatmul` (the default where it can run): deploylm's C++ `int8_linear` (runtime/csrc/int8_linear.cpp) for
  every row count. One call rotates each input row, quantises it to u8 with its own scale and zero point and
  multiplies on AVX-512 VNNI or, on CPUs without it, AVX2 (exact integer sums either way, so both give the same
  numbers); the weights are kept once, in the kernel's packed layout.
- `TorchMatmul` (no compiler, neither instruction set, or $DEPLOYLM_INT8_KERNEL=0): torch's kernels. A call with many rows
  runs fbgemm's int8 GEMM (`torch.ops.quantized.linear_dynamic`, activations quantised per tensor after each row
  is divided by its largest magnitude); a call with a few rows runs torch's weight-only int8 kernel on bf16
  activations (see PLAIN_KERNEL_MAX_ROWS).

Both compute y = (x H)(W H)^T with int8-rounded activations, so they agree to int8 rounding, not bit for bit: a
variant's gate records which one it measured (`int8_summary` in weight_int8.py).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch

# fbgemm's reduce_range (7-bit activations) is off: weight_int8.SAFE_LEVELS keeps its int16 sums from saturating.
REDUCE_RANGE = False
# A decode step has one row (token) per sequence. For a few rows, torch's weight-only int8 kernel
# (`torch._weight_int8pack_mm`: int8 weights, bf16 activations, fp32 accumulation) beats fbgemm, whose fixed cost
# per call (quantising the activations, repacking them) dominates a matrix-vector product; from a few rows on, or
# for a matrix with many outputs (a fused gate/up, an LM head), fbgemm's int8 GEMM wins (benchmarks/
# decoder_kernels.py times both per shape and row count, weights read from memory as in a real step).
PLAIN_KERNEL_MAX_ROWS = 2
PLAIN_KERNEL_MAX_OUT = 2048
# The C++ kernel's packing: 16 output channels x 4 consecutive inputs per 64-byte vector; PANEL such vectors of
# neighbouring channels side by side per 4 inputs, so a panel's weights are one sequential stream.
TILE, GROUP, PANEL = 16, 4, 2
_TINY = 1e-30


def matmul_for(weight_int8: torch.Tensor, scale: torch.Tensor, fbgemm_safe: bool) -> "VnniMatmul | TorchMatmul":
    """`fbgemm_safe`: the weights keep to weight_int8.SAFE_LEVELS, so fbgemm cannot saturate on them."""
    from ..runtime import cpp_kernels

    module = cpp_kernels.int8_kernel()
    if module is not None:
        return VnniMatmul(module, weight_int8, scale)
    return TorchMatmul(weight_int8, scale, fbgemm_safe)


class VnniMatmul:
    @property
    def kernel(self) -> str:
        return (f"deploylm int8_linear (C++, {self._module.int8_simd()}): per-row asymmetric u8 activations, "
                "every row count")

    def __init__(self, module, weight_int8: torch.Tensor, scale: torch.Tensor):
        n, k = weight_int8.shape
        width = TILE * PANEL
        n_pad, k_pad = -(-n // width) * width, -(-k // GROUP) * GROUP
        padded = torch.zeros(n_pad, k_pad, dtype=torch.int8)
        padded[:n, :k] = weight_int8
        self._module, self._shape = module, (n, k)
        self._packed = padded.view(n_pad // width, PANEL, TILE, k_pad // GROUP, GROUP).permute(0, 3, 1, 2, 4).contiguous()
        self._row_sums = padded.sum(dim=1, dtype=torch.int32)
        self._scale = scale.float().contiguous()

    def __call__(self, rows: torch.Tensor, bias: torch.Tensor | None, block: int) -> torch.Tensor:
        return self._module.int8_linear(rows, self._packed, self._row_sums, self._scale, bias, block)

    def weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = self._shape
        panels, k4 = self._packed.shape[:2]
        full = self._packed.permute(0, 2, 3, 1, 4).reshape(panels * PANEL * TILE, k4 * GROUP)
        return full[:n, :k].contiguous(), self._scale.clone()

    def plain_copy_bytes(self) -> int:
        return 0


@contextmanager
def _fbgemm():
    """Pack with fbgemm (the packed object then runs fbgemm whatever the engine is later), quietly: torch 2.13
    marks quantised tensor constructors deprecated, and they are the only way into these kernels."""
    engines = torch.backends.quantized.supported_engines
    previous = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*", category=UserWarning)
        if "fbgemm" in engines:
            torch.backends.quantized.engine = "fbgemm"
        try:
            yield
        finally:
            torch.backends.quantized.engine = previous


class TorchMatmul:
    @property
    def kernel(self) -> str:
        if self._plain_only:
            return "torch._weight_int8pack_mm (bf16 activations) for every row count: full-range weights"
        return ("fbgemm torch.ops.quantized.linear_dynamic; torch._weight_int8pack_mm (bf16 activations) for up to "
                f"{PLAIN_KERNEL_MAX_ROWS} rows")

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, fbgemm_safe: bool = True):
        out_features, in_features = weight_int8.shape
        # The plain kernel reads K in steps of 16 (other widths give wrong sums) and large matrices run faster
        # on fbgemm even for one row: see PLAIN_KERNEL_MAX_ROWS. Weights fbgemm could saturate on never reach it:
        # the plain kernel takes every row count (or, at widths it cannot sum, the weights dequantised).
        self._plain_only = not fbgemm_safe
        use_plain = in_features % 16 == 0 and (out_features <= PLAIN_KERNEL_MAX_OUT or self._plain_only)
        self._plain = weight_int8.contiguous() if use_plain else None
        self._plain_scale = scale.to(torch.bfloat16) if use_plain else None
        self._weight, self._scale = weight_int8.contiguous(), scale.float()
        if self._plain_only:
            self._packed = None
            return
        self._weight = self._scale = None  # fbgemm's packed form keeps them
        zeros = torch.zeros(out_features, dtype=torch.long)
        with _fbgemm():
            q = torch._make_per_channel_quantized_tensor(weight_int8.contiguous(), scale.double(), zeros, 0)
            # The bias is added after the per-token rescaling in __call__, so none is packed.
            self._packed = torch.ops.quantized.linear_prepack(q, None)

    def __call__(self, rows: torch.Tensor, bias: torch.Tensor | None, block: int) -> torch.Tensor:
        from .weight_int8 import rotate

        rows = rotate(rows, block)
        if self._plain_only and self._plain is None:  # full-range weights at a width the plain kernel cannot sum
            y = rows @ (self._weight.float() * self._scale[:, None]).t()
        elif self._plain is not None and (rows.shape[0] <= PLAIN_KERNEL_MAX_ROWS or self._plain_only):
            y = torch._weight_int8pack_mm(rows.to(torch.bfloat16), self._plain, self._plain_scale).float()
        elif rows.shape[0] == 1:  # one row: per tensor is per row
            y = torch.ops.quantized.linear_dynamic(rows, self._packed, REDUCE_RANGE)
        else:  # an outlier row would otherwise set every row's quantisation step
            amax = rows.abs().amax(dim=1, keepdim=True).clamp_min_(_TINY)
            y = torch.ops.quantized.linear_dynamic(rows / amax, self._packed, REDUCE_RANGE).mul_(amax)
        return y if bias is None else y.add_(bias)

    def weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._packed is None:
            return self._weight.clone(), self._scale.clone()
        q, _ = torch.ops.quantized.linear_unpack(self._packed)
        return q.int_repr(), q.q_per_channel_scales().float()

    def plain_copy_bytes(self) -> int:
        return 0 if self._plain is None or self._packed is None else self._plain.numel()
