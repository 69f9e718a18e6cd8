"""The fused CPU attention kernels on numpy buffers, against a numpy reference: torch-free, so that
`make test-sanitize` runs them under AddressSanitizer and UBSan (tests/ops compares them with torch's ops)."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core

HEADS, KV_HEADS, HEAD_DIM, ROT_DIM, BLOCK_SIZE, NUM_BLOCKS, EPS = 4, 2, 16, 8, 4, 20, 1e-6


def ptr(array: np.ndarray) -> int:
    assert array.flags.c_contiguous
    return array.ctypes.data


def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * (x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + EPS))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = ROT_DIM // 2
    out = x.copy()
    a, b = x[..., :half], x[..., half:ROT_DIM]
    out[..., :half], out[..., half:ROT_DIM] = a * cos - b * sin, b * cos + a * sin
    return out


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_decode_attention_block(qk_norm: bool, window: int) -> None:
    rng = np.random.default_rng(window + qk_norm)
    seq_lens = np.array([1, 6, 13], dtype=np.int32)
    reqs, row = len(seq_lens), KV_HEADS * HEAD_DIM
    tables = np.stack([rng.permutation(NUM_BLOCKS)[:4] for _ in seq_lens]).astype(np.int32)
    last = seq_lens - 1
    slots = tables[np.arange(reqs), last // BLOCK_SIZE].astype(np.int64) * BLOCK_SIZE + last % BLOCK_SIZE
    qkv = rng.standard_normal((reqs, (HEADS + 2 * KV_HEADS) * HEAD_DIM), dtype=np.float32)
    angles = rng.random((reqs, ROT_DIM // 2), dtype=np.float32) * 6
    cos, sin = np.cos(angles), np.sin(angles)
    kv_cache = rng.standard_normal((2, NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM), dtype=np.float32)
    norms = [rng.random(HEAD_DIM, dtype=np.float32) + 0.5 for _ in range(2)] if qk_norm else []
    expected_cache = kv_cache.copy()

    q = qkv[:, : HEADS * HEAD_DIM].reshape(reqs, HEADS, HEAD_DIM)
    k = qkv[:, HEADS * HEAD_DIM : HEADS * HEAD_DIM + row].reshape(reqs, KV_HEADS, HEAD_DIM)
    v = qkv[:, HEADS * HEAD_DIM + row :].reshape(reqs, KV_HEADS, HEAD_DIM)
    if norms:
        q, k = rms(q, norms[0]), rms(k, norms[1])
    q, k = rotate(q, cos[:, None], sin[:, None]), rotate(k, cos[:, None], sin[:, None])
    flat = expected_cache.reshape(2, -1, KV_HEADS, HEAD_DIM)
    flat[0, slots], flat[1, slots] = k, v
    expected = np.empty((reqs, HEADS, HEAD_DIM), dtype=np.float32)
    for r, seq_len in enumerate(seq_lens):
        first = max(0, seq_len - window) if window else 0
        positions = np.arange(first, seq_len)
        cached = flat[:, tables[r, positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE]  # [2, L, KVH, D]
        for h in range(HEADS):
            scores = cached[0, :, h // (HEADS // KV_HEADS)] @ q[r, h] * HEAD_DIM**-0.5
            weights = np.exp(scores - scores.max())
            expected[r, h] = (weights / weights.sum()) @ cached[1, :, h // (HEADS // KV_HEADS)]

    out = np.empty((reqs, HEADS * HEAD_DIM), dtype=np.float32)
    q_norm, k_norm = (ptr(w) for w in norms) if norms else (0, 0)
    _core.cpu.decode_attention_block(
        ptr(out), ptr(qkv), q_norm, k_norm, ptr(cos), ptr(sin), ptr(kv_cache), ptr(slots), ptr(tables),
        ptr(seq_lens), reqs, HEADS, KV_HEADS, HEAD_DIM, ROT_DIM, NUM_BLOCKS, BLOCK_SIZE, tables.shape[1],
        qkv.shape[1], EPS, HEAD_DIM**-0.5, window,
    )  # fmt: skip
    np.testing.assert_allclose(kv_cache, expected_cache, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.reshape(reqs, HEADS, HEAD_DIM), expected, rtol=1e-4, atol=1e-5)
