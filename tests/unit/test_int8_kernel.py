"""deploylm's C++ int8 linear (runtime/csrc/int8_linear.cpp, used through optimize/int8_matmul.VnniMatmul) against
a float64 reference written here from the formula: rotate each row by the block Hadamard matrix, quantise it to
u8 on its own range widened to hold 0 (255 steps, a zero point per row, ties to even), multiply with the int8
weights, scale by both scales, add the bias. Shapes cover padding (outputs not a multiple of 16, inputs not a
multiple of 4 or 16), every row-block size of the kernel, and rotation blocks of 0 to 64."""

from __future__ import annotations

import pytest
import torch

from deploylm.optimize.int8_matmul import VnniMatmul
from deploylm.runtime import cpp_kernels
from int8_cpu import expected_int8_simd

pytestmark = pytest.mark.skipif(not expected_int8_simd(), reason="this CPU has neither AVX-512 VNNI nor AVX2: "
                                "the kernel is not used")


@pytest.fixture(scope="module")
def module():
    built = cpp_kernels.int8_kernel()
    assert built is not None, f"the C++ kernels did not build (`make install` builds them): {cpp_kernels.build_error()}"
    assert built.int8_simd() == expected_int8_simd()  # the loop this CPU can run, not the scalar fallback
    return built


def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n ** 0.5


def reference(x, w_int8, scale, bias, block):
    r = x.double()
    if block:
        r = (r.reshape(-1, block) @ sylvester(block)).reshape(x.shape)
    lo, hi = r.amin(dim=1, keepdim=True).clamp(max=0), r.amax(dim=1, keepdim=True).clamp(min=0)
    step = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
    zero = torch.round(-lo / step).clamp(0, 255)
    q = (torch.round(r / step) + zero).clamp(0, 255) - zero
    y = (q @ w_int8.double().t()) * step * scale.double()
    return y if bias is None else y + bias.double()


CASES = [  # rows, outputs, inputs, rotation block, bias
    (1, 40, 18, 0, True), (2, 17, 64, 8, True), (3, 576, 576, 64, False), (5, 100, 96, 32, True),
    (7, 960, 576, 64, True), (13, 3072, 576, 64, False), (40, 576, 1536, 64, True), (1, 4099, 576, 64, False),
    (6, 33, 20, 4, False), (12, 48, 160, 16, True),
]


@pytest.mark.parametrize("rows,n,k,block,bias", CASES)
def test_kernel_computes_the_formula(module, rows, n, k, block, bias):
    """Equal to the reference except where a value sits on a rounding tie of the activations (the kernel rotates
    in float32, the reference in float64): at most one activation step of one input, far below a wrong scale, a
    wrong offset or a dropped tile, which would move every output."""
    torch.manual_seed(rows * 1000 + n)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) * 0.01 + 1e-4
    b = torch.randn(n) if bias else None
    x = torch.randn(rows, k)
    x[:, min(3, k - 1)] *= 25.0  # an outlier channel, as decoders have
    y = VnniMatmul(module, w, scale)(x, b, block)
    ref = reference(x, w, scale, b, block)
    assert y.shape == (rows, n) and y.dtype == torch.float32
    err = (y.double() - ref).abs()
    one_step = (ref.abs().max() / 127) * 2  # generous: one activation step moves an output by far less
    assert err.max() <= one_step, float(err.max())
    assert err.median() <= 1e-5 * ref.abs().max(), float(err.median())


def test_packing_round_trips_the_weights_exactly(module):
    torch.manual_seed(4)
    w = torch.randint(-64, 65, (37, 22), dtype=torch.int8)
    scale = torch.rand(37)
    got_w, got_s = VnniMatmul(module, w, scale).weight()
    assert torch.equal(got_w, w) and torch.equal(got_s, scale)


def test_zero_rows_give_the_bias_and_non_finite_rows_stay_non_finite(module):
    w = torch.randint(-64, 65, (20, 32), dtype=torch.int8)
    bias = torch.randn(20)
    x = torch.zeros(3, 32)
    x[1, 5] = float("nan")
    x[2] = torch.randn(32)
    y = VnniMatmul(module, w, torch.full((20,), 0.01))(x, bias, 16)
    assert torch.equal(y[0], bias)
    assert torch.isnan(y[1]).all()
    assert torch.isfinite(y[2]).all() and not torch.equal(y[2], bias)


def test_bad_shapes_are_refused_with_the_numbers(module):
    matmul = VnniMatmul(module, torch.zeros(16, 32, dtype=torch.int8), torch.ones(16))
    with pytest.raises(RuntimeError, match="x has 40 features, the weights 32"):
        matmul(torch.zeros(1, 40), None, 0)
    with pytest.raises(RuntimeError, match="rotation block does not divide"):
        matmul(torch.zeros(1, 32), None, 24)
