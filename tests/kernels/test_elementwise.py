"""rms_norm, fused_add_rms_norm, silu_and_mul, rotary embedding and reshape_and_cache against the torch
reference, which runs first on the same inputs.

Tolerances: the kernels round every intermediate where the reference does (see csrc/kernels/*.cu), so the
remaining differences are float32 reduction order and rsqrtf/expf's last-bit error. Those can move a result
across a rounding boundary of the output dtype: one ulp of it, 2^-7 relative for bf16, 2^-10 for fp16, and
float32's own ~1e-6. The rotary embedding and the cache copy involve no reduction and must match exactly.
"""

from __future__ import annotations

import pytest
import torch

from kvserve.ops import reference

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ULP = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, ulps: float = 1.0) -> None:
    assert not actual.isnan().any(), "an output element was never written (still NaN)"
    torch.testing.assert_close(actual, expected, rtol=ulps * ULP[dtype], atol=ulps * ULP[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", [(1, 64), (7, 769), (33, 4096), (5, 5125), (128, 8192)])
def test_rms_norm(kernels, dtype, rows, hidden):
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype) * 3
    weight = torch.randn(hidden, device="cuda", dtype=dtype)
    expected = reference.rms_norm(x, weight, 1e-6)
    # Each output is weight * normalised: one rounding of each may flip, so two ulps.
    close(kernels.rms_norm(x, weight, 1e-6), expected, dtype, ulps=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_of_strided_and_3d_inputs(kernels, dtype):
    qkv = torch.randn(9, 3 * 256, device="cuda", dtype=dtype)
    rows = qkv[:, :256]  # a row stride larger than the row
    heads = qkv[:, 256:512].view(9, 4, 64)  # per-head norm of a view (q_norm / k_norm)
    weight = torch.randn(256, device="cuda", dtype=dtype)
    head_weight = torch.randn(64, device="cuda", dtype=dtype)
    expected_rows = reference.rms_norm(rows, weight, 1e-5)
    expected_heads = reference.rms_norm(heads, head_weight, 1e-5)
    close(kernels.rms_norm(rows, weight, 1e-5), expected_rows, dtype, ulps=2)
    close(kernels.rms_norm(heads, head_weight, 1e-5), expected_heads, dtype, ulps=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", [(1, 64), (7, 769), (64, 4096), (3, 5125)])
def test_fused_add_rms_norm(kernels, dtype, rows, hidden):
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    residual = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    weight = torch.randn(hidden, device="cuda", dtype=dtype)
    residual_before = residual.clone()
    expected_out, expected_residual = reference.fused_add_rms_norm(x, residual, weight, 1e-6)
    out, new_residual = kernels.fused_add_rms_norm(x, residual, weight, 1e-6)
    # The sum is one rounding of the same two values: exact.
    torch.testing.assert_close(new_residual, expected_residual, rtol=0, atol=0)
    close(out, expected_out, dtype, ulps=2)
    torch.testing.assert_close(residual, residual_before, rtol=0, atol=0)  # inputs untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 128), (7, 2 * 769), (64, 2 * 14336), (2, 3, 2 * 5125)])
def test_silu_and_mul(kernels, dtype, shape):
    x = torch.randn(*shape, device="cuda", dtype=dtype) * 4
    expected = reference.silu_and_mul(x)
    # silu rounds once (expf may differ in the last float bit), then the product rounds once.
    close(kernels.silu_and_mul(x), expected, dtype, ulps=2)


def _qkv_views(tokens: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype):
    """query and key as views into one fused qkv activation, as the model passes them."""
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device="cuda", dtype=dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    return q, k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", ["neox", "gptj"])
@pytest.mark.parametrize(
    "tokens,heads,kv_heads,head_dim,rot_dim",
    [(1, 4, 2, 64, 64), (37, 32, 8, 128, 128), (5, 6, 2, 96, 48), (300, 14, 2, 64, 32)],
)
def test_rotary_embedding(kernels, dtype, style, tokens, heads, kv_heads, head_dim, rot_dim):
    q, k = _qkv_views(tokens, heads, kv_heads, head_dim, dtype)
    angles = torch.rand(tokens, rot_dim // 2, device="cuda") * 100
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    q_before, k_before = q.clone(), k.clone()
    ref_fn = reference.rotary_embedding if style == "neox" else reference.rotary_embedding_gptj
    op = kernels.rotary_embedding if style == "neox" else kernels.rotary_embedding_gptj
    expected_q, expected_k = ref_fn(q, k, cos, sin)
    out_q, out_k = op(q, k, cos, sin)
    # The same roundings in the same order (products, then the sum), no reduction: bit-exact.
    torch.testing.assert_close(out_q, expected_q, rtol=0, atol=0)
    torch.testing.assert_close(out_k, expected_k, rtol=0, atol=0)
    torch.testing.assert_close(q, q_before, rtol=0, atol=0)
    torch.testing.assert_close(k, k_before, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_kernel_in_place(dtype):
    """The kernel itself rotates in place when out is x (the op returns new tensors, as custom ops must)."""
    from kvserve import _kernels
    from kvserve.ops.cuda_kernels import DTYPE_CODES

    q, k = _qkv_views(19, 8, 2, 128, dtype)
    angles = torch.rand(19, 64, device="cuda") * 10
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    expected_q, _ = reference.rotary_embedding(q, k, cos, sin)
    stream = torch.cuda.current_stream().cuda_stream
    _kernels.rotary_embedding(
        DTYPE_CODES[dtype],
        q.data_ptr(),
        q.data_ptr(),
        cos.data_ptr(),
        sin.data_ptr(),
        19,
        8,
        128,
        128,
        q.stride(0),
        q.stride(1),
        q.stride(0),
        q.stride(1),
        True,
        stream,
    )
    torch.testing.assert_close(q, expected_q, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("tokens,kv_heads,head_dim", [(1, 8, 128), (83, 2, 64), (1000, 8, 128), (13, 3, 80)])
def test_reshape_and_cache(kernels, dtype, block_size, tokens, kv_heads, head_dim):
    num_blocks = tokens // block_size + 8
    q, key = _qkv_views(tokens, kv_heads, kv_heads, head_dim, dtype)
    value = torch.randn(tokens, kv_heads, head_dim, device="cuda", dtype=dtype)
    slots = torch.randperm(num_blocks * block_size, device="cuda")[:tokens]
    cache = torch.full((2, num_blocks, block_size, kv_heads, head_dim), float("nan"), device="cuda", dtype=dtype)
    expected = cache.clone()
    reference.reshape_and_cache(key, value, expected, slots)
    kernels.reshape_and_cache(key, value, cache, slots)
    # A copy: exact, and the slots not written stay NaN in both (equal_nan).
    torch.testing.assert_close(cache, expected, rtol=0, atol=0, equal_nan=True)
