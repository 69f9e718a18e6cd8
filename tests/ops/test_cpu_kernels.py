"""The C++ float32 CPU kernels against the torch reference, on odd sizes and real layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kvserve.ops import cpu_kernels, reference

# Reductions run in a different order than torch's: agreement to a few float32 ulps of unit-scale values.
TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("hidden", [1, 7, 64, 769])
def test_rms_norms(hidden):
    torch.manual_seed(hidden)
    x, residual, weight = torch.randn(5, hidden), torch.randn(5, hidden), torch.randn(hidden)
    torch.testing.assert_close(cpu_kernels.rms_norm(x, weight, 1e-6), reference.rms_norm(x, weight, 1e-6), **TOL)
    out, new_residual = cpu_kernels.fused_add_rms_norm(x, residual, weight, 1e-5)
    ref_out, ref_residual = reference.fused_add_rms_norm(x, residual, weight, 1e-5)
    torch.testing.assert_close(out, ref_out, **TOL)
    assert torch.equal(new_residual, ref_residual)  # one addition: bit-exact


def test_silu_and_mul():
    x = torch.randn(3, 2 * 5125) * 4
    torch.testing.assert_close(cpu_kernels.silu_and_mul(x), reference.silu_and_mul(x), **TOL)


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


def test_reshape_and_cache_from_strided_views():
    kv_cache = torch.zeros(2, 6, 4, 2, 8)
    qkv = torch.randn(5, 6 * 8)
    key, value = qkv[:, 16:32].view(5, 2, 8), qkv[:, 32:48].view(5, 2, 8)
    slots = torch.tensor([23, 0, 7, 12, 4])
    expected = kv_cache.clone()
    reference.reshape_and_cache(key, value, expected, slots)
    assert cpu_kernels.reshape_and_cache(key, value, kv_cache, slots) is None
    assert torch.equal(kv_cache, expected)


@pytest.mark.parametrize("window", [0, 6])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 16), (9, 3, 64), (2, 2, 7)])
def test_decode_attention(heads, kv_heads, head_dim, window):
    torch.manual_seed(heads * head_dim)
    block_size, num_blocks = 4, 40
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim)
    seq_lens = torch.tensor([1, 5, 17, 33], dtype=torch.int32)
    tables = torch.stack([torch.randperm(num_blocks)[:9] for _ in seq_lens]).to(torch.int32)
    query = torch.randn(len(seq_lens), heads, head_dim)
    scale = head_dim**-0.5
    expected = reference.decode_attention(query, kv_cache, tables, seq_lens, scale, window)
    torch.testing.assert_close(cpu_kernels._decode(query, kv_cache, tables, seq_lens, scale, window), expected, **TOL)


def test_mixed_batch_attention_matches_reference():
    torch.manual_seed(3)
    kv_cache = torch.randn(2, 30, 4, 2, 16)
    q_lens = torch.tensor([1, 6, 1, 3])
    seq_lens = torch.tensor([9, 6, 20, 11], dtype=torch.int32)
    query_start_loc = F.pad(q_lens.cumsum(0), (1, 0)).to(torch.int32)
    tables = torch.stack([torch.randperm(30)[:6] for _ in q_lens]).to(torch.int32)
    query = torch.randn(int(q_lens.sum()), 4, 16)
    args = (query, kv_cache, tables, seq_lens, query_start_loc, 6, 20, 0.25, 0)
    torch.testing.assert_close(cpu_kernels.paged_attention(*args), reference.paged_attention(*args), **TOL)


def test_unsupported_inputs_fall_back():
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert cpu_kernels.rms_norm(x, torch.ones(8, dtype=torch.bfloat16), 1e-6) is NotImplemented
    assert cpu_kernels.silu_and_mul(torch.randn(4, 6).t()) is NotImplemented
