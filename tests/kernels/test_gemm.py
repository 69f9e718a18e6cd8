"""CUTLASS GEMMs, scaled GEMMs and the quantization kernel against the float32 torch reference, on the GPU.

Every compiled tile configuration runs on a grid of shapes: decode-sized and ragged M (not a multiple of any
tile), N and K that are multiples of the 16-byte alignment TMA needs but not of the tiles, with and without
bias, with per-token and per-tensor activation scales and per-channel and per-tensor weight scales.

Tolerances, against the reference computed in float32 from the same operands and rounded once:
- 16-bit GEMM and int8: the kernels accumulate exactly as the reference does up to float32 reordering (int8:
  an exact int32 sum; the epilogue's fused multiply-add rounds once where the reference rounds twice), so the
  outputs differ by at most one rounding of the output type: 2^-8 relative for bf16, 2^-11 for fp16 (2 ulps
  allowed at the rounding boundary), plus a float32-sized atol for cancellations.
- fp8 e4m3: the FP8FastAccum schedules accumulate in the tensor core's reduced-precision (~14-bit mantissa)
  accumulator without promotion to float32 each k-block (as cuBLAS's fast-accumulation fp8 GEMMs do);
  DeepSeek-V3's report measured up to ~2% relative error from it at K = 4096, and the bf16/fp16 output rounding
  adds 2^-9 rms. The checks: ||out - ref|| / ||ref|| < 2e-2 and every element within 3% of the output's rms
  plus 2^-7 of its largest magnitude. A wrong scale, row or tile is off by ~100%.
"""

from __future__ import annotations

import pytest
import torch

from kvserve.ops import gemm_reference

pytestmark = pytest.mark.cuda
# Collected everywhere, skipped without a GPU; without kvserve._kernels (no nvcc at build time) not collected.
cuda_gemm = pytest.importorskip("kvserve.ops.cuda_gemm", reason="kvserve._kernels was not built", exc_type=ImportError)

# (M, N, K): M from decode to prefill, ragged; N, K multiples of 16 bytes but not of tile sizes.
SHAPES = [(1, 256, 128), (7, 264, 136), (33, 1032, 2064), (64, 4096, 512), (129, 776, 4096), (769, 1544, 528)]
OUT_RTOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10}


def configs(operand: torch.dtype, out_dtype: torch.dtype) -> list[str]:
    names = cuda_gemm.available_configs(operand, out_dtype, torch.cuda.current_device())
    assert names, f"no compiled GEMM configuration for {operand} -> {out_dtype} on this device"
    return names


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not out.isnan().any(), "unwritten (poisoned) or NaN output"
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm(kernels, dtype, shape, with_bias):
    m, n, k = shape
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    b = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
    bias = torch.randn(n, device="cuda", dtype=dtype) if with_bias else None
    ref = gemm_reference.gemm(a, b, bias)
    for config in configs(dtype, dtype):
        out = cuda_gemm.gemm_with_config(a, b, bias, config)
        assert out.dtype == dtype and out.shape == (m, n)
        torch.testing.assert_close(out, ref, rtol=2 * OUT_RTOL[dtype], atol=1e-3, msg=lambda s, c=config: f"{c}: {s}")


@pytest.mark.parametrize("operand", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scales", ["token-channel", "tensor-tensor", "token-tensor", "tensor-channel"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_scaled_mm(kernels, operand, out_dtype, shape, scales, with_bias):
    if cuda_gemm.device_sm(torch.cuda.current_device()) < 89 and operand == torch.float8_e4m3fn:
        pytest.skip("fp8 tensor cores need compute capability 8.9 or newer")
    m, n, k = shape
    a, a_scale = gemm_reference.dynamic_quantize(torch.randn(m, k, device="cuda"), operand)
    b, b_scale = gemm_reference.dynamic_quantize(torch.randn(n, k, device="cuda"), operand)
    if scales.startswith("tensor"):
        a_scale = a_scale.amax().reshape(1)
    if scales.endswith("tensor"):
        b_scale = b_scale.amax().reshape(1)
    bias = torch.randn(n, device="cuda", dtype=out_dtype) * 10 if with_bias else None
    ref = gemm_reference.scaled_mm(a, b, a_scale, b_scale, out_dtype, bias)
    for config in configs(operand, out_dtype):
        out = cuda_gemm.scaled_mm_with_config(a, b, a_scale, b_scale, out_dtype, bias, config)
        assert out.dtype == out_dtype and out.shape == (m, n)
        if operand == torch.int8:
            atol = 1e-4 * ref.float().abs().max().item()
            rtol = 2 * OUT_RTOL[out_dtype]
            torch.testing.assert_close(out, ref, rtol=rtol, atol=atol, msg=lambda s, c=config: f"{c}: {s}")
        else:
            assert relative_error(out, ref) < 2e-2, config
            rms = ref.float().pow(2).mean().sqrt().item()
            assert (out.float() - ref.float()).abs().max().item() < 0.03 * rms + 2**-7 * ref.float().abs().max().item()


@pytest.mark.parametrize("operand", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 16), (5, 4096), (333, 1000), (2048, 136)])
def test_dynamic_quantize_matches_the_reference_exactly(kernels, operand, in_dtype, shape):
    x = (torch.randn(*shape, device="cuda") * torch.rand(shape[0], 1, device="cuda") * 100).to(in_dtype)
    x[0, :] = 0 if shape[0] > 1 else x[0, :]
    ref_q, ref_scales = gemm_reference.dynamic_quantize(x, operand)
    q, scales = cuda_gemm.dynamic_quantize(x, operand)
    torch.testing.assert_close(scales, ref_scales, rtol=0, atol=0)
    assert torch.equal(q.view(torch.int8), ref_q.view(torch.int8))


def test_strided_rows_are_quantized(kernels):
    x = torch.randn(12, 512, device="cuda", dtype=torch.bfloat16)[:, :256]  # row stride 512
    q, scales = cuda_gemm.dynamic_quantize(x, torch.float8_e4m3fn)
    ref_q, ref_scales = gemm_reference.dynamic_quantize(x, torch.float8_e4m3fn)
    assert torch.equal(q.view(torch.int8), ref_q.view(torch.int8)) and torch.equal(scales, ref_scales)


def test_misaligned_shapes_fall_back_to_the_reference():
    from kvserve import ops

    a = torch.randn(3, 100, device="cuda", dtype=torch.bfloat16)  # 200-byte rows: not a multiple of 16
    b = torch.randn(5125, 100, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(ops.gemm(a, b), gemm_reference.gemm(a, b), rtol=0, atol=0)


def test_an_unknown_configuration_is_a_value_error():
    a = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="no GEMM configuration nope"):
        cuda_gemm.gemm_with_config(a, b, None, "nope")
