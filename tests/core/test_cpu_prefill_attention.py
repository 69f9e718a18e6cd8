"""The C++ prefill attention (csrc/cpu/prefill_attention.cpp) on numpy buffers against a float64 numpy
reference, torch-free so that `make test-sanitize` runs it under AddressSanitizer and UBSan.

Prompt chunks with and without cached context before them, tails of the 16-key tiles and of the query tiles,
block sizes that do not divide the tiles, sliding windows, groups of 1 to 8 query heads per KV head and a
float32, float16 and bfloat16 cache. Rows of one-row requests (decodes) belong to the decode kernel: they
must come back untouched."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core
from tests.core.test_cpu_attention_block import CACHE_DTYPES, narrow, ptr, widen

pytestmark = pytest.mark.skipif(
    not _core.cpu.paged_attention_prefill_fits(64), reason="no AVX2 + FMA + F16C here (or KVSERVE_CPU_ISA caps it)"
)

# (query rows, cached tokens before them) per request: decodes, a two-row chunk, tile tails, chunked prefills.
REQUESTS = [(1, 9), (2, 0), (17, 0), (1, 0), (40, 23), (33, 1), (70, 0)]


def causal_attention(q, flat, tables, seq_lens, starts, block_size, window) -> np.ndarray:
    """q [T, H, D] over the float32 cache flat [2, slots, KVH, D], in float64; NaN for one-row requests."""
    out = np.full(q.shape, np.nan)
    group = q.shape[1] // flat.shape[2]
    for r, seq_len in enumerate(seq_lens):
        start, end = starts[r], starts[r + 1]
        if end - start < 2:
            continue
        positions = np.arange(seq_len)
        cached = flat[:, tables[r, positions // block_size] * block_size + positions % block_size].astype(np.float64)
        for i, t in enumerate(range(start, end)):
            pos = seq_len - (end - start) + i
            lo = max(0, pos - window + 1) if window else 0
            for h in range(q.shape[1]):
                keys, values = cached[0, lo : pos + 1, h // group], cached[1, lo : pos + 1, h // group]
                scores = keys @ q[t, h] * q.shape[2] ** -0.5
                weights = np.exp(scores - scores.max())
                out[t, h] = (weights / weights.sum()) @ values
    return out


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
@pytest.mark.parametrize("window", [0, 5])
@pytest.mark.parametrize("block_size", [16, 5])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 64), (6, 2, 40), (8, 1, 128), (3, 3, 8)])
def test_prefill_attention(heads, kv_heads, head_dim, block_size, window, cache_dtype) -> None:
    dtype_id = CACHE_DTYPES[cache_dtype][0]
    rng = np.random.default_rng(head_dim + block_size + window)
    q_lens = np.array([q for q, _ in REQUESTS], dtype=np.int32)
    seq_lens = np.array([q + c for q, c in REQUESTS], dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    width = int(-(-seq_lens.max() // block_size))
    num_blocks = width * len(REQUESTS)
    tables = rng.permutation(num_blocks).reshape(len(REQUESTS), width).astype(np.int32)
    kv_cache = narrow(
        rng.standard_normal((2, num_blocks, block_size, kv_heads, head_dim), dtype=np.float32), cache_dtype
    )
    # The query rows sit in a wider token row (as in a fused qkv projection): the kernel reads them in place.
    tokens, q_size = int(starts[-1]), heads * head_dim
    qkv = rng.standard_normal((tokens, q_size + 24), dtype=np.float32)
    query = qkv[:, :q_size].reshape(tokens, heads, head_dim)
    flat = widen(kv_cache, cache_dtype).reshape(2, -1, kv_heads, head_dim)
    expected = causal_attention(query, flat, tables, seq_lens, starts, block_size, window)
    outs = []
    for threads in (1, 3):
        out = np.full((tokens, heads, head_dim), np.nan, dtype=np.float32)
        _core.cpu.paged_attention_prefill(
            ptr(out), ptr(qkv), ptr(kv_cache), dtype_id, ptr(tables), ptr(seq_lens), ptr(starts), len(REQUESTS),
            heads, kv_heads, head_dim, num_blocks, block_size, width, qkv.shape[1], head_dim**-0.5, window, threads,
        )  # fmt: skip
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)  # NaN where expected is: decode rows
        outs.append(out)
    # Each (request, KV head, tile) is computed by one thread in one order: any thread count, the same bits.
    np.testing.assert_array_equal(outs[0], outs[1])


def test_large_scores_stay_finite() -> None:
    """Scores near 2000 (far past exp's float32 range before the running maximum is subtracted) that rise by
    one a position, so the running maximum moves at every tile while the weights stay spread over keys."""
    heads = kv_heads = 1
    head_dim, block_size, seq_len = 16, 16, 50
    keys = (100 + 0.05 * np.arange(seq_len, dtype=np.float32))[:, None] * np.ones(head_dim, dtype=np.float32)
    values = np.eye(seq_len, head_dim, dtype=np.float32) + np.arange(seq_len, dtype=np.float32)[:, None]
    kv_cache = np.zeros((2, 4, block_size, kv_heads, head_dim), dtype=np.float32)
    kv_cache.reshape(2, -1, head_dim)[0, :seq_len], kv_cache.reshape(2, -1, head_dim)[1, :seq_len] = keys, values
    query = np.full((seq_len, heads, head_dim), 5.0, dtype=np.float32)
    tables = np.arange(4, dtype=np.int32)[None]
    seq_lens, starts = np.array([seq_len], np.int32), np.array([0, seq_len], np.int32)
    out = np.empty_like(query)
    _core.cpu.paged_attention_prefill(
        ptr(out), ptr(query), ptr(kv_cache), 0, ptr(tables), ptr(seq_lens), ptr(starts), 1, heads, kv_heads,
        head_dim, 4, block_size, 4, head_dim, head_dim**-0.5, 0, 2,
    )  # fmt: skip
    expected = causal_attention(query, kv_cache.reshape(2, -1, kv_heads, head_dim), tables, seq_lens, starts, 16, 0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_head_sizes_without_a_kernel() -> None:
    assert not _core.cpu.paged_attention_prefill_fits(12)
    assert not _core.cpu.paged_attention_prefill_fits(0)
    assert _core.cpu.paged_attention_prefill_fits(8)
