"""Float decoder linears on panel-packed weights (runtime/decoder_linear.py): deploylm's C++ `float_linear` and the
torch path on the same panels, against a float64 product of the original weights. Shapes cover output padding
(fewer than 32 outputs, not a multiple of 32), every row-block size of the kernel and both sides of FEW_ROWS,
bf16 weights with float32 activations (the reference widens the same bf16 values, so only the sums' rounding
differs) and a bias."""

from __future__ import annotations

import pytest
import torch

from deploylm.runtime import cpp_kernels
from deploylm.runtime.decoder_linear import FEW_ROWS, PackedLinear, pack_linears
from int8_cpu import expected_float_simd


@pytest.fixture(scope="module")
def kernel():
    if not expected_float_simd():
        pytest.skip("this CPU has neither AVX-512 nor AVX2: the float kernel is not used")
    built = cpp_kernels.float_kernel()
    assert built is not None, f"the C++ kernels did not build (`make install` builds them): {cpp_kernels.build_error()}"
    assert built.float_simd() == expected_float_simd()  # the loop this CPU can run, not the scalar fallback
    return built


def reference(x, linear):
    y = x.double() @ linear.weight.detach().double().t()
    return y if linear.bias is None else y + linear.bias.detach().double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(100, 77, True), (64, 16, False), (576, 960, False), (33, 65, True)])
@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, FEW_ROWS, FEW_ROWS + 1, 40])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_packed_linear_matches_the_float64_product(kernel, dtype, shape, rows, use_kernel):
    torch.manual_seed(rows)
    k, n, bias = shape
    linear = torch.nn.Linear(k, n, bias=bias).to(dtype)
    packed = PackedLinear(linear, kernel if use_kernel else None)
    x = torch.randn(rows, k)
    got = packed(x)
    want = reference(x, linear)
    assert got.shape == (rows, n)
    scale = want.abs().max().item()
    # fp32 activations and sums on both paths (bf16 weights are widened exactly): 1e-5 of the largest output.
    assert (got.double() - want).abs().max().item() <= 1e-5 * scale


def test_leading_dimensions_and_dtype_are_kept(kernel):
    linear = torch.nn.Linear(48, 40)
    x = torch.randn(2, 3, 48)
    y = PackedLinear(linear, kernel)(x)
    assert y.shape == (2, 3, 40) and y.dtype == torch.float32
    assert torch.allclose(y, linear(x), atol=1e-5)


def test_unpacked_weight_is_the_original(kernel):
    linear = torch.nn.Linear(50, 70)
    assert torch.equal(PackedLinear(linear, kernel).weight(), linear.weight.detach())


def test_pack_linears_swaps_float_linears_only(kernel):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 4)))
    assert pack_linears(model, kernel) == 2
    assert isinstance(model[0], PackedLinear) and isinstance(model[2][0], PackedLinear)


def test_wrong_shapes_are_refused(kernel):
    packed = PackedLinear(torch.nn.Linear(16, 32), kernel)
    with pytest.raises(RuntimeError, match="features"):
        kernel.float_linear(torch.randn(2, 15), packed.packed, None, 32)
    with pytest.raises(RuntimeError, match="panels"):
        kernel.float_linear(torch.randn(2, 16), packed.packed, None, 64)
