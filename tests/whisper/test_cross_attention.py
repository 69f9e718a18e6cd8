"""The cross-attention op: every query row of a request sees all of its encoder positions, read from its
cross blocks, against dense attention; the CPU kernel path (decode rows) against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kvserve import ops
from kvserve.ops import cpu_kernels, reference

BLOCK_SIZE, HEADS, HEAD_DIM, NUM_BLOCKS = 8, 4, 16, 64


def scattered_cache(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A cache holding each request's keys/values in shuffled blocks; returns it, the block tables and the
    dense [2, L, H, D] K/V per request."""
    gen = torch.Generator().manual_seed(seed)
    cache = torch.randn(2, NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_DIM, generator=gen)
    free = torch.randperm(NUM_BLOCKS, generator=gen).tolist()
    width = max(-(-n // BLOCK_SIZE) for n in lengths)
    tables = torch.zeros(len(lengths), width, dtype=torch.int32)
    dense = []
    for r, n in enumerate(lengths):
        blocks = [free.pop() for _ in range(-(-n // BLOCK_SIZE))]
        tables[r, : len(blocks)] = torch.tensor(blocks)
        dense.append(cache[:, blocks].reshape(2, -1, HEADS, HEAD_DIM)[:, :n])
    return cache, tables, dense


@pytest.mark.parametrize("q_lens", [[1, 1, 1], [4, 1, 3], [2, 5, 1]])
def test_cross_attention_against_dense(q_lens):
    lengths = [37, 8, 20]  # the last block of the first and third requests is partly used
    cache, tables, dense = scattered_cache(lengths, seed=sum(q_lens))
    query = torch.randn(sum(q_lens), HEADS, HEAD_DIM)
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    out = reference.cross_attention(
        query, cache, tables, torch.tensor(lengths, dtype=torch.int32), starts, max(q_lens), max(lengths), 0.25
    )
    for k_v, start, q_len in zip(dense, starts.tolist(), q_lens):
        q = query[start : start + q_len].transpose(0, 1)
        expected = F.scaled_dot_product_attention(q, k_v[0].transpose(0, 1), k_v[1].transpose(0, 1), scale=0.25)
        torch.testing.assert_close(out[start : start + q_len], expected.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_decode_rows_take_the_cpu_kernel():
    lengths = [37, 8, 20]
    cache, tables, _ = scattered_cache(lengths, seed=1)
    query = torch.randn(3, HEADS, HEAD_DIM)
    args = (
        query,
        cache,
        tables,
        torch.tensor(lengths, dtype=torch.int32),
        torch.arange(4, dtype=torch.int32),
        1,
        37,
        0.25,
    )
    kernel = cpu_kernels.cross_attention(*args)
    assert kernel is not NotImplemented
    torch.testing.assert_close(kernel, reference.cross_attention(*args), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.cross_attention(*args), kernel)
