"""The C++ float32 CPU kernels against the torch reference, on odd sizes and real layouts, over KV caches of
each element type the kernels take (float32, float16, bfloat16)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kvserve import ops
from kvserve.ops import cpu_kernels, reference
from tests.torch_threads import torch_threads

# Reductions run in a different order than torch's: agreement to a few float32 ulps of unit-scale values.
TOL = dict(rtol=2e-5, atol=2e-5)
CACHE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("rows", [5, 64])  # 64 x 769 values: split across threads
@pytest.mark.parametrize("hidden", [1, 7, 64, 769])
def test_rms_norms(rows, hidden):
    torch.manual_seed(hidden)
    x, residual, weight = torch.randn(rows, hidden), torch.randn(rows, hidden), torch.randn(hidden)
    torch.testing.assert_close(cpu_kernels.rms_norm(x, weight, 1e-6), reference.rms_norm(x, weight, 1e-6), **TOL)
    out, new_residual = cpu_kernels.fused_add_rms_norm(x, residual, weight, 1e-5)
    ref_out, ref_residual = reference.fused_add_rms_norm(x, residual, weight, 1e-5)
    torch.testing.assert_close(out, ref_out, **TOL)
    assert torch.equal(new_residual, ref_residual)  # one addition: bit-exact


@pytest.mark.parametrize(("rows", "d"), [(3, 3), (3, 8), (3, 5125), (32, 1344)])  # 32 x 1344: split across threads
def test_silu_and_mul(rows, d):
    """Whole vectors and a tail (the vectorised exp's lanes and the last partial group), at unit scale and at
    gates far in either tail of the sigmoid."""
    torch.manual_seed(d)
    x = torch.randn(rows, 2 * d) * 4
    x[0, : min(d, 4)] = torch.tensor([-100.0, 100.0, 0.0, -30.0])[: min(d, 4)]
    torch.testing.assert_close(cpu_kernels.silu_and_mul(x), reference.silu_and_mul(x), **TOL)


def assert_within_one_bf16_ulp(got: torch.Tensor, want: torch.Tensor) -> None:
    """bfloat16 results of float32 math summed in another order than torch's: a value may round to the
    neighbouring bfloat16 (when the float32 result sits at a rounding boundary), rarely, never further."""
    got, want = got.float(), want.float()
    ulp = want.abs().clamp_min(torch.finfo(torch.bfloat16).tiny) * 2.0**-7
    assert ((got - want).abs() <= ulp).all()
    assert (got == want).float().mean() >= 0.99


@pytest.mark.parametrize("rows", [3, 64])  # 64 x 769 values: split across threads
@pytest.mark.parametrize("hidden", [7, 64, 769])
def test_bf16_rms_norms_round_as_torch(rows, hidden):
    torch.manual_seed(hidden)
    x, residual = torch.randn(rows, hidden).bfloat16(), (torch.randn(rows, hidden) * 3).bfloat16()
    weight = (torch.rand(hidden) + 0.5).bfloat16()
    assert_within_one_bf16_ulp(cpu_kernels.rms_norm(x, weight, 1e-6), reference.rms_norm(x, weight, 1e-6))
    out, new_residual = cpu_kernels.fused_add_rms_norm(x, residual, weight, 1e-5)
    ref_out, ref_residual = reference.fused_add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(new_residual, ref_residual)  # one rounded addition: bit-exact
    assert_within_one_bf16_ulp(out, ref_out)


@pytest.mark.parametrize(("rows", "d"), [(3, 13), (32, 1344)])
def test_bf16_silu_and_mul_rounds_as_torch(rows, d):
    torch.manual_seed(d)
    x = (torch.randn(rows, 2 * d) * 4).bfloat16()
    assert_within_one_bf16_ulp(cpu_kernels.silu_and_mul(x), reference.silu_and_mul(x))


def test_mixed_activation_types_take_the_reference():
    assert cpu_kernels.rms_norm(torch.randn(2, 8).bfloat16(), torch.ones(8), 1e-6) is NotImplemented
    assert cpu_kernels.fused_add_rms_norm(torch.randn(2, 8), torch.randn(2, 8).bfloat16(), torch.ones(8), 1e-6) is (
        NotImplemented
    )


@pytest.mark.parametrize(("head_dim", "rot_dim"), [(64, 64), (80, 40), (16, 16)])
def test_rotary_in_place_on_a_fused_qkv_row(head_dim, rot_dim):
    torch.manual_seed(head_dim)
    tokens, heads, kv_heads = 9, 4, 2
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    angles = torch.rand(tokens, rot_dim // 2) * 6
    cos, sin = angles.cos(), angles.sin()
    ref_q, ref_k = reference.rotary_embedding(q.clone(), k.clone(), cos, sin)
    out_q, out_k = cpu_kernels.rotary_embedding(q, k, cos, sin)
    assert torch.equal(out_q, ref_q) and torch.equal(out_k, ref_k)  # elementwise, no FMA: bit-exact


@pytest.mark.parametrize("input_dtype", CACHE_DTYPES)
@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
def test_reshape_and_cache_from_strided_views(cache_dtype, input_dtype):
    """Keys and values of a float32 or half-precision model, into a cache of each type: bit-exact against the
    reference's `.to(cache dtype)` (a copy where the types agree)."""
    kv_cache = torch.zeros(2, 6, 4, 2, 8, dtype=cache_dtype)
    qkv = (torch.randn(5, 6 * 8) * 100).to(input_dtype)
    key, value = qkv[:, 16:32].view(5, 2, 8), qkv[:, 32:48].view(5, 2, 8)
    slots = torch.tensor([23, 0, 7, 12, 4])
    expected = kv_cache.clone()
    reference.reshape_and_cache(key, value, expected, slots)
    assert cpu_kernels.reshape_and_cache(key, value, kv_cache, slots) is None
    assert torch.equal(kv_cache, expected)


def _decode_case(heads, kv_heads, head_dim, block_size, cache_dtype, seed):
    """Ragged contexts that end on, just past and inside a block (and span a whole 8-key group and a partial one
    in blocks of 16), over scattered blocks."""
    torch.manual_seed(seed)
    num_blocks = 40
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim).to(cache_dtype)
    seq_lens = torch.tensor([1, 5, 16, 33, 4 * block_size + 3], dtype=torch.int32)
    tables = torch.stack([torch.randperm(num_blocks)[:9] for _ in seq_lens]).to(torch.int32)
    return torch.randn(len(seq_lens), heads, head_dim), kv_cache, tables, seq_lens


# head sizes a multiple of 32 take the AVX2 kernel where the CPU has it (groups of 1, 2, 3 and 7 query heads a KV
# head; head_dim 96 and 128 in three and four passes of 32 values), the others the portable loops.
DECODE_SHAPES = [(4, 2, 16), (9, 3, 64), (2, 2, 7), (8, 2, 128), (4, 4, 32), (14, 2, 96)]


@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
@pytest.mark.parametrize("window", [0, 6])
@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), DECODE_SHAPES)
def test_decode_attention(heads, kv_heads, head_dim, block_size, window, cache_dtype):
    """The same cached values in both: float32 agreement whatever the cache's type (both widen it exactly)."""
    query, kv_cache, tables, seq_lens = _decode_case(heads, kv_heads, head_dim, block_size, cache_dtype, head_dim)
    scale = head_dim**-0.5
    expected = reference.decode_attention(query, kv_cache, tables, seq_lens, scale, window)
    torch.testing.assert_close(cpu_kernels._decode(query, kv_cache, tables, seq_lens, scale, window), expected, **TOL)


@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
@pytest.mark.parametrize("threads", [2, 3, 8])
def test_decode_attention_of_fewer_requests_than_threads_shares_out_their_kv_heads(threads, cache_dtype):
    """One or two long requests on more threads: each request's KV heads are split among items (3 heads in
    shares of 1 and 2, or of 1 each), and the rows come out as the reference's."""
    torch.manual_seed(threads)
    kv_cache = torch.randn(2, 80, 16, 3, 64).to(cache_dtype)
    tables = torch.stack([torch.randperm(80)[:40] for _ in range(2)]).to(torch.int32)
    query = torch.randn(2, 9, 64)
    scale = 64**-0.5
    for seq_lens in (torch.tensor([613], dtype=torch.int32), torch.tensor([401, 637], dtype=torch.int32)):
        args = (query[: len(seq_lens)], kv_cache, tables[: len(seq_lens)], seq_lens, scale, 0)
        expected = reference.decode_attention(*args)
        with torch_threads(threads):
            out = cpu_kernels._decode(*args)
        torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
@pytest.mark.parametrize("window", [0, 200])
def test_decode_attention_over_a_large_cache_prefetches_and_still_matches(cache_dtype, window):
    """Past 1 MiB of cache read a step, each thread's prefetcher walks ahead of its reads and claims the next
    items for it: every request's rows still come out as the reference's, at 1 to 3 threads."""
    torch.manual_seed(7)
    kv_cache = torch.randn(2, 512, 16, 4, 64).to(cache_dtype)
    seq_lens = torch.tensor([700, 33, 512, 1, 650, 300, 690, 128, 16, 401], dtype=torch.int32)
    tables = torch.stack([torch.randperm(512)[:48] for _ in seq_lens]).to(torch.int32)
    query = torch.randn(len(seq_lens), 8, 64)
    args = (query, kv_cache, tables, seq_lens, 64**-0.5, window)
    expected = reference.decode_attention(*args)
    for threads in (1, 2, 3):
        with torch_threads(threads):
            out = cpu_kernels._decode(*args)
        torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_attention_of_half_precision_queries_rounds_the_float32_result_once(dtype):
    """A bf16/f16 model's queries: widened exactly, float32 math, the output rounded to their type once."""
    query, kv_cache, tables, seq_lens = _decode_case(8, 2, 64, 16, dtype, 1)
    query = query.to(dtype)
    out = cpu_kernels._decode(query, kv_cache, tables, seq_lens, 0.125, 0)
    assert out.dtype == dtype
    expected = reference.decode_attention(query.float(), kv_cache, tables, seq_lens, 0.125, 0)
    # Rounding to the nearest half-precision value is off by at most half its spacing, eps / 2 relative; the
    # float32 results' own few-ulp difference can tip a value to its other neighbour: within eps, not eps / 2.
    torch.testing.assert_close(out.float(), expected, rtol=torch.finfo(dtype).eps, atol=1e-6)


@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
def test_mixed_batch_attention_matches_reference(cache_dtype):
    torch.manual_seed(3)
    kv_cache = torch.randn(2, 30, 4, 2, 16).to(cache_dtype)
    q_lens = torch.tensor([1, 6, 1, 3])
    seq_lens = torch.tensor([9, 6, 20, 11], dtype=torch.int32)
    query_start_loc = F.pad(q_lens.cumsum(0), (1, 0)).to(torch.int32)
    tables = torch.stack([torch.randperm(30)[:6] for _ in q_lens]).to(torch.int32)
    query = torch.randn(int(q_lens.sum()), 4, 16)
    args = (query, kv_cache, tables, seq_lens, query_start_loc, 6, 20, 0.25, 0)
    torch.testing.assert_close(cpu_kernels.paged_attention(*args), reference.paged_attention(*args), **TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_batch_of_half_precision_queries_rounds_each_row_once(dtype):
    """A bf16/f16 model's step of decodes and prompt chunks (the chunks through the prefill kernel): float32
    math on the widened queries, each output row rounded to their type once."""
    torch.manual_seed(4)
    kv_cache = torch.randn(2, 40, 16, 2, 64).to(dtype)
    q_lens = torch.tensor([1, 37, 1, 20])
    seq_lens = torch.tensor([9, 37, 50, 45], dtype=torch.int32)
    query_start_loc = F.pad(q_lens.cumsum(0), (1, 0)).to(torch.int32)
    tables = torch.stack([torch.randperm(40)[:4] for _ in q_lens]).to(torch.int32)
    query = torch.randn(int(q_lens.sum()), 8, 64).to(dtype)
    args = (kv_cache, tables, seq_lens, query_start_loc, 37, 50, 0.125, 0)
    out = cpu_kernels.paged_attention(query, *args)
    assert out.dtype == dtype
    expected = reference.paged_attention(query.float(), *args)
    torch.testing.assert_close(out.float(), expected, rtol=torch.finfo(dtype).eps, atol=1e-6)


def test_unsupported_inputs_fall_back():
    x = torch.randn(3, 8, dtype=torch.float16)
    assert cpu_kernels.rms_norm(x, torch.ones(8, dtype=torch.float16), 1e-6) is NotImplemented
    assert cpu_kernels.silu_and_mul(torch.randn(4, 6).t()) is NotImplemented


def _reference_attention_block(qkv, heads, kv_heads, head_dim, q_norm, k_norm, eps, cos, sin, kv_cache, *attn_args):
    """The unfused reference ops, as a decoder layer composed them before ops.attention_block."""
    tokens, q_size, kv_size = qkv.shape[0], heads * head_dim, kv_heads * head_dim
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q, k = q.reshape(tokens, heads, head_dim), k.reshape(tokens, kv_heads, head_dim)
    if q_norm is not None:
        q, k = reference.rms_norm(q, q_norm, eps), reference.rms_norm(k, k_norm, eps)
    q, k = reference.rotary_embedding(q, k, cos, sin)
    slot_mapping, *rest = attn_args
    reference.reshape_and_cache(k, v.reshape(tokens, kv_heads, head_dim), kv_cache, slot_mapping)
    return reference.paged_attention(q, kv_cache, *rest).reshape(tokens, q_size)


def _attention_step(
    q_lens: list[int], seq_lens: list[int], heads: int, kv_heads: int, head_dim: int, rot_dim: int,
    cache_dtype: torch.dtype = torch.float32,
):  # fmt: skip
    """Random qkv rows, a random cache and block tables for requests whose last q_lens[r] tokens (of
    seq_lens[r]) are computed in this step; the slots of those tokens."""
    block_size, num_blocks, width = 4, 64, 12
    tables = torch.stack([torch.randperm(num_blocks)[:width] for _ in q_lens]).to(torch.int32)
    positions = [p for q_len, seq_len in zip(q_lens, seq_lens) for p in range(seq_len - q_len, seq_len)]
    owners = [r for r, q_len in enumerate(q_lens) for _ in range(q_len)]
    slots = torch.tensor(
        [int(tables[r, p // block_size]) * block_size + p % block_size for r, p in zip(owners, positions)]
    )
    qkv = torch.randn(len(positions), (heads + 2 * kv_heads) * head_dim)
    angles = torch.tensor(positions, dtype=torch.float32).view(-1, 1) * torch.rand(rot_dim // 2)
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim).to(cache_dtype)
    query_start_loc = F.pad(torch.tensor(q_lens).cumsum(0), (1, 0)).to(torch.int32)
    attn_args = (slots, tables, torch.tensor(seq_lens, dtype=torch.int32), query_start_loc, max(q_lens), max(seq_lens))
    return qkv, angles.cos(), angles.sin(), kv_cache, attn_args


@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("window", [0, 5])
@pytest.mark.parametrize(
    ("q_lens", "heads", "kv_heads", "head_dim", "rot_dim"),
    [
        ([1, 1, 1, 1], 4, 2, 32, 32),  # a decode step: the one-call kernel
        ([1, 1, 1], 9, 3, 64, 32),  # partial rotary
        ([1, 7, 1, 3], 4, 1, 16, 16),  # mixed prefill and decode: prepare_qkv, then paged attention
    ],
)
def test_attention_block_matches_the_unfused_reference_ops(
    q_lens, heads, kv_heads, head_dim, rot_dim, window, qk_norm, cache_dtype
):
    torch.manual_seed(len(q_lens) * head_dim + window)
    seq_lens = [q_len + extra for q_len, extra in zip(q_lens, [0, 9, 30, 17])]
    qkv, cos, sin, kv_cache, attn_args = _attention_step(
        q_lens, seq_lens, heads, kv_heads, head_dim, rot_dim, cache_dtype
    )
    norms = (torch.rand(head_dim) + 0.5, torch.rand(head_dim) + 0.5) if qk_norm else (None, None)
    shape_args = (heads, kv_heads, head_dim, *norms, 1e-6, cos, sin)
    scale = head_dim**-0.5
    ref_cache = kv_cache.clone()
    expected = _reference_attention_block(qkv.clone(), *shape_args, ref_cache, *attn_args, scale, window)
    out = cpu_kernels.attention_block(qkv, *shape_args, kv_cache, *attn_args, scale, window)
    # Values are rounded into the cache once, as the reference rounds them: bit-exact. Keys went through the
    # norm (a reduction), a few float32 ulps apart, so their rounding may land one step of the cache type away.
    assert torch.equal(kv_cache[1], ref_cache[1])
    cache_ulp = {torch.float32: 2e-5, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[cache_dtype]
    torch.testing.assert_close(kv_cache.float(), ref_cache.float(), rtol=cache_ulp, atol=2e-5)
    if cache_dtype is torch.float32 or torch.equal(kv_cache, ref_cache):  # else keys differ by a cache ulp
        torch.testing.assert_close(out, expected, **TOL)
    # The attention over what the kernel wrote, from its rotated queries (qkv is rotated in place): float32 ulps.
    tokens, q_size = qkv.shape[0], heads * head_dim
    slots, *rest = attn_args
    on_written = reference.paged_attention(
        qkv[:, :q_size].reshape(tokens, heads, head_dim), kv_cache, *rest, scale, window
    )
    torch.testing.assert_close(out, on_written.reshape(tokens, q_size), **TOL)


def test_attention_block_dispatch_falls_back_to_the_ops_for_other_dtypes():
    torch.manual_seed(0)
    qkv, cos, sin, kv_cache, attn_args = _attention_step([1, 1], [5, 9], 4, 2, 16, 16)
    args = (4, 2, 16, None, None, 1e-6, cos, sin)
    assert cpu_kernels.attention_block(qkv.double(), *args, kv_cache.double(), *attn_args, 0.25, 0) is NotImplemented
    ref_cache = kv_cache.double()
    out = ops.attention_block(qkv.double(), *args, ref_cache, *attn_args, 0.25, 0)
    expected = cpu_kernels.attention_block(qkv.clone(), *args, kv_cache, *attn_args, 0.25, 0)
    torch.testing.assert_close(out.float(), expected, **TOL)
    torch.testing.assert_close(ref_cache.float(), kv_cache, **TOL)


@pytest.mark.skipif("KVSERVE_CPU_ISA" in os.environ, reason="already running under a capped instruction set")
def test_attention_on_the_portable_build():
    """The attention and activation checks again with the kernels capped at the baseline instruction set (the
    portable loops, which CPUs without AVX2 run)."""
    env = {**os.environ, "KVSERVE_CPU_ISA": "baseline"}
    tests = ["-k", "(attention or silu) and not portable", "-q", "-p", "no:cacheprovider", __file__]
    result = subprocess.run([sys.executable, "-m", "pytest", *tests], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
