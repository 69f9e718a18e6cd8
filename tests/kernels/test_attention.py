"""Paged attention against the reference computed first, in float64 on the same (upcast) inputs.

Block tables are random permutations (no two requests' blocks adjacent), and every cache slot that no request
may read (past a context's end, blocks in no table) is filled with NaN after the oracle ran: a kernel that reads
one, or leaves an output element unwritten, produces NaN and fails.

Tolerances: the kernels accumulate in float32 and round the output once to the dtype, so the error is at most
about one ulp of the output (|out| <= max |v| ~ 4 here): bf16 2^-8 * 4 ~ 1.6e-2, fp16 2^-11 * 4 ~ 2e-3; float32
accumulation over 4k keys stays under 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch

from kvserve.ops import reference

pytestmark = pytest.mark.cuda

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make_batch(q_lens, seq_lens, heads, kv_heads, head_dim, block_size, dtype):
    """A batch whose request r has q_lens[r] query tokens at the end of a seq_lens[r]-token context."""
    blocks_per_req = [math.ceil(s / block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_req) + 5
    width = max(blocks_per_req) + 2
    physical = torch.randperm(num_blocks, device="cuda").to(torch.int32)
    block_tables = torch.zeros(len(seq_lens), width, dtype=torch.int32, device="cuda")
    used = 0
    for r, n in enumerate(blocks_per_req):
        block_tables[r, :n] = physical[used : used + n]
        used += n
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, device="cuda").to(dtype)
    query = torch.randn(sum(q_lens), heads, head_dim, device="cuda").to(dtype)
    query_start_loc = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    return query, kv_cache, block_tables, seq_lens_t, query_start_loc


def poison_unreadable(kv_cache, block_tables, seq_lens, block_size):
    readable = torch.zeros(kv_cache.shape[1] * block_size, dtype=torch.bool, device="cuda")
    for r, seq_len in enumerate(seq_lens.tolist()):
        pos = torch.arange(seq_len, device="cuda")
        readable[block_tables[r, pos // block_size].long() * block_size + pos % block_size] = True
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])
    flat[:, ~readable] = float("nan")


def check(kernels, q_lens, seq_lens, heads, kv_heads, head_dim, block_size, dtype, window=0):
    query, kv_cache, tables, lens, starts = make_batch(q_lens, seq_lens, heads, kv_heads, head_dim, block_size, dtype)
    scale = head_dim**-0.5
    args = (tables, lens, starts, max(q_lens), max(seq_lens), scale, window)
    expected = reference.paged_attention(query.double(), kv_cache.double(), *args)
    poison_unreadable(kv_cache, tables, lens, block_size)
    out = kernels.paged_attention(query, kv_cache, *args)
    assert not out.isnan().any(), "NaN: an unwritten output or a read of a slot outside every context"
    torch.testing.assert_close(out.double(), expected, rtol=TOL[dtype], atol=TOL[dtype])


# Context lengths: a single key, partial blocks, exactly a split (512), several splits, the 4k decode target.
DECODE_SEQ_LENS = [1, 17, 512, 513, 2100, 4097, 33, 1000]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (32, 8), (16, 2), (14, 2), (16, 1)])
def test_decode(kernels, dtype, head_dim, block_size, heads, kv_heads):
    check(kernels, [1] * len(DECODE_SEQ_LENS), DECODE_SEQ_LENS, heads, kv_heads, head_dim, block_size, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (32, 8), (12, 2)])
def test_mixed_prefill_and_decode(kernels, dtype, head_dim, heads, kv_heads):
    # A fresh prompt, a chunk of a longer prompt (context before it), decodes short and long, a 1-token prompt.
    q_lens = [37, 1, 130, 1, 5, 1]
    seq_lens = [37, 700, 1300, 1, 5, 2600]
    check(kernels, q_lens, seq_lens, heads, kv_heads, head_dim, 16, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [1, 50, 700])
def test_sliding_window(kernels, dtype, window):
    check(kernels, [1, 64, 1, 9], [1500, 600, 20, 9], 8, 2, 128, 32, dtype, window=window)


def test_decode_batch_of_many_requests(kernels):
    seq_lens = torch.randint(1, 3000, (200,)).tolist()
    check(kernels, [1] * 200, seq_lens, 32, 8, 128, 16, torch.bfloat16)


def test_unsupported_head_dim_runs_the_reference():
    from kvserve import ops

    query, kv_cache, tables, lens, starts = make_batch([1, 3], [40, 3], 4, 2, 96, 16, torch.float32)
    args = (tables, lens, starts, 3, 40, 96**-0.5, 0)
    expected = reference.paged_attention(query, kv_cache, *args)
    torch.testing.assert_close(ops.paged_attention(query, kv_cache, *args), expected)
