"""The torch reference of the 8-bit ops: the CPU path of quantized models and the CUDA kernels' oracle."""

from __future__ import annotations

import pytest
import torch

from kvserve import ops
from kvserve.ops import gemm_reference


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.int8])
def test_dynamic_quantize_per_token(dtype):
    torch.manual_seed(0)
    x = torch.randn(7, 96) * torch.logspace(-3, 2, 7).unsqueeze(1)
    x[3] = 0  # an all-zero row: scale 1, values 0
    q, scales = ops.dynamic_quantize(x, dtype)
    qmax = gemm_reference.QUANT_DTYPES[dtype]
    assert q.dtype == dtype and scales.shape == (7,) and scales.dtype == torch.float32
    assert scales[3] == 1 and (q[3].float() == 0).all()
    expected_scales = x.abs().amax(-1) / qmax
    expected_scales[3] = 1
    torch.testing.assert_close(scales, expected_scales, rtol=0, atol=0)
    # Each row's largest magnitude lands on the type's largest value.
    nonzero = [r for r in range(7) if r != 3]
    assert (q[nonzero].float().abs().amax(-1) == qmax).all()
    # Round trip: int8 within half a step; fp8 e4m3 within half an ulp (3 mantissa bits: 2^-4 relative).
    back = gemm_reference.dequantize(q, scales)
    if dtype == torch.int8:
        assert ((back - x).abs() <= scales.unsqueeze(1) / 2 * (1 + 1e-6)).all()
    else:
        normal = x.abs() >= scales.unsqueeze(1) * 2**-6  # e4m3's smallest normal
        assert ((back - x).abs()[normal] <= x.abs()[normal] * 2**-4 * (1 + 1e-6)).all()


def test_int8_scaled_mm_is_the_exact_integer_product_scaled():
    torch.manual_seed(0)
    a = torch.randint(-127, 128, (5, 64), dtype=torch.int8)
    b = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    a_scale, b_scale = torch.rand(5) + 0.1, torch.rand(24) + 0.1
    bias = torch.randn(24)
    exact = (a.long() @ b.long().T).double()  # |sums| < 2^24: float32 holds them exactly
    expected = (a_scale.double().view(-1, 1) * (b_scale.double().view(1, -1) * exact) + bias.double()).float()
    out = ops.scaled_mm(a, b, a_scale, b_scale, torch.float32, bias)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_scaled_mm_per_tensor_scales_and_output_dtype():
    torch.manual_seed(0)
    a = (torch.randn(4, 32) * 10).to(torch.float8_e4m3fn)
    b = (torch.randn(16, 32) * 10).to(torch.float8_e4m3fn)
    out = ops.scaled_mm(a, b, torch.tensor([0.5]), torch.tensor([0.25]), torch.bfloat16)
    assert out.dtype == torch.bfloat16
    expected = (0.125 * (a.float() @ b.float().T)).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_gemm_reference_rounds_once():
    torch.manual_seed(0)
    a, b, bias = torch.randn(3, 40, dtype=torch.bfloat16), torch.randn(8, 40, dtype=torch.bfloat16), torch.randn(8)
    out = ops.gemm(a, b, bias.bfloat16())
    expected = (a.float() @ b.float().T + bias.bfloat16().float()).bfloat16()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_quantize_to_a_16_bit_type_is_refused():
    with pytest.raises(ValueError, match="cannot quantize to torch.bfloat16"):
        gemm_reference.dynamic_quantize(torch.randn(2, 8), torch.bfloat16)
