"""The pure-torch ops against plain dense computations (they are the CPU path and the CUDA oracle)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kvserve import ops


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: int, window: int) -> torch.Tensor:
    """q [n, H, D] for positions context..context+n-1; k, v [context + n, KVH, D]; float64 reference."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).double()
    v = v.repeat_interleave(group, dim=1).double()
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * q.shape[-1] ** -0.5
    qpos = torch.arange(context, context + q.shape[0]).view(-1, 1)
    kpos = torch.arange(k.shape[0]).view(1, -1)
    visible = kpos <= qpos
    if window > 0:
        visible &= kpos > qpos - window
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).float()


@pytest.mark.parametrize("window", [0, 5])
@pytest.mark.parametrize(("query_lens", "contexts"), [([1, 1, 1], [0, 7, 20]), ([5, 1, 13, 2], [0, 9, 3, 30])])
def test_paged_attention_matches_dense(query_lens, contexts, window):
    torch.manual_seed(0)
    num_heads, num_kv_heads, head_dim, block_size, num_blocks = 4, 2, 8, 4, 64
    kv_cache = torch.zeros(2, num_blocks, block_size, num_kv_heads, head_dim)
    free = torch.randperm(num_blocks).tolist()  # scattered blocks, as after a while of serving
    queries, tables, expected = [], [], []
    for q_len, context in zip(query_lens, contexts):
        seq_len = context + q_len
        blocks = [free.pop() for _ in range(-(-seq_len // block_size))]
        k = torch.randn(seq_len, num_kv_heads, head_dim)
        v = torch.randn(seq_len, num_kv_heads, head_dim)
        slots = torch.tensor([blocks[p // block_size] * block_size + p % block_size for p in range(seq_len)])
        ops.reshape_and_cache(k, v, kv_cache, slots)
        q = torch.randn(q_len, num_heads, head_dim)
        queries.append(q)
        tables.append(blocks)
        expected.append(dense_attention(q, k, v, context, window))
    width = max(map(len, tables))
    block_tables = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    seq_lens = torch.tensor([c + q for c, q in zip(contexts, query_lens)], dtype=torch.int32)
    query_start_loc = F.pad(torch.tensor(query_lens).cumsum(0), (1, 0)).to(torch.int32)
    out = ops.paged_attention(
        torch.cat(queries),
        kv_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        max(query_lens),
        int(seq_lens.max()),
        head_dim**-0.5,
        window,
    )
    # float32 attention over <= 33 keys against float64: a few ulps of the unit-scale outputs.
    torch.testing.assert_close(out, torch.cat(expected), rtol=1e-5, atol=1e-5)


def test_reshape_and_cache_writes_each_slot():
    kv_cache = torch.zeros(2, 3, 2, 1, 4)
    key = torch.arange(12.0).view(3, 1, 4)
    ops.reshape_and_cache(key, -key, kv_cache, torch.tensor([5, 0, 2]))
    flat = kv_cache.view(2, 6, 1, 4)
    assert torch.equal(flat[0, [5, 0, 2]], key) and torch.equal(flat[1, [5, 0, 2]], -key)
    assert flat[0, [1, 3, 4]].abs().sum() == 0


def test_norms_and_activation():
    x = torch.randn(5, 16, dtype=torch.bfloat16)
    residual = torch.randn(5, 16, dtype=torch.bfloat16)
    weight = torch.randn(16, dtype=torch.bfloat16)
    x32 = (x + residual).float()
    expected = weight * (x32 / (x32.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()).bfloat16()
    out, new_residual = ops.fused_add_rms_norm(x, residual, weight, 1e-6)
    torch.testing.assert_close(out, expected)
    assert torch.equal(new_residual, x + residual)
    gate_up = torch.randn(3, 8)
    torch.testing.assert_close(ops.silu_and_mul(gate_up), F.silu(gate_up[:, :4]) * gate_up[:, 4:])


def test_ops_are_registered_custom_ops():
    assert hasattr(torch.ops.kvserve, "paged_attention") and hasattr(torch.ops.kvserve, "reshape_and_cache")
