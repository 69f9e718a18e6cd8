"""The fused CPU attention kernels on numpy buffers, against a numpy reference: torch-free, so that
`make test-sanitize` runs them under AddressSanitizer and UBSan (tests/ops compares them with torch's ops).
Each runs over a float32, float16 and bfloat16 KV cache (numpy has no bfloat16: its bits are kept in uint16)."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core

HEADS, KV_HEADS, HEAD_DIM, ROT_DIM, BLOCK_SIZE, NUM_BLOCKS, EPS = 4, 2, 16, 8, 4, 20, 1e-6
# cache dtype -> (the id the kernels take, numpy storage type, relative spacing of its values: one ulp)
CACHE_DTYPES = {
    "float32": (0, np.float32, 2.0**-23),
    "float16": (1, np.float16, 2.0**-10),
    "bfloat16": (2, np.uint16, 2.0**-7),
}


def ptr(array: np.ndarray) -> int:
    assert array.flags.c_contiguous
    return array.ctypes.data


def narrow(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> the cache's storage, rounded to nearest, ties to even (as torch's .to() rounds)."""
    if dtype != "bfloat16":
        with np.errstate(over="ignore"):  # large values round to infinity, as intended
            return x.astype(CACHE_DTYPES[dtype][1])
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return np.where(np.isnan(x), (bits >> 16) | 0x40, rounded).astype(np.uint16)


def widen(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype != "bfloat16":
        return x.astype(np.float32)
    return (x.astype(np.uint32) << 16).view(np.float32)


def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * (x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + EPS))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = ROT_DIM // 2
    out = x.copy()
    a, b = x[..., :half], x[..., half:ROT_DIM]
    out[..., :half], out[..., half:ROT_DIM] = a * cos - b * sin, b * cos + a * sin
    return out


def attention(
    q: np.ndarray, flat: np.ndarray, tables: np.ndarray, seq_lens: np.ndarray, window: int, block_size: int = BLOCK_SIZE
) -> np.ndarray:
    """q [R, H, D] over the float32 cache flat [2, slots, KVH, D] -> [R, H, D], in float64."""
    out = np.empty(q.shape, dtype=np.float64)
    for r, seq_len in enumerate(seq_lens):
        first = max(0, seq_len - window) if window else 0
        positions = np.arange(first, seq_len)
        cached = flat[:, tables[r, positions // block_size] * block_size + positions % block_size]  # [2, L, KVH, D]
        for h in range(q.shape[1]):
            kvh = h // (q.shape[1] // flat.shape[2])
            scores = cached[0, :, kvh].astype(np.float64) @ q[r, h] * q.shape[2] ** -0.5
            weights = np.exp(scores - scores.max())
            out[r, h] = (weights / weights.sum()) @ cached[1, :, kvh]
    return out


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_decode_attention_block(qk_norm: bool, window: int, cache_dtype: str) -> None:
    dtype_id, _, ulp = CACHE_DTYPES[cache_dtype]
    rng = np.random.default_rng(window + qk_norm)
    seq_lens = np.array([1, 6, 13, 8], dtype=np.int32)  # 8: the new token ends a block
    reqs, row = len(seq_lens), KV_HEADS * HEAD_DIM
    tables = np.stack([rng.permutation(NUM_BLOCKS)[:4] for _ in seq_lens]).astype(np.int32)
    last = seq_lens - 1
    slots = tables[np.arange(reqs), last // BLOCK_SIZE].astype(np.int64) * BLOCK_SIZE + last % BLOCK_SIZE
    qkv = rng.standard_normal((reqs, (HEADS + 2 * KV_HEADS) * HEAD_DIM), dtype=np.float32)
    angles = rng.random((reqs, ROT_DIM // 2), dtype=np.float32) * 6
    cos, sin = np.cos(angles), np.sin(angles)
    kv_cache = narrow(
        rng.standard_normal((2, NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM), dtype=np.float32), cache_dtype
    )
    norms = [rng.random(HEAD_DIM, dtype=np.float32) + 0.5 for _ in range(2)] if qk_norm else []
    expected_cache = widen(kv_cache, cache_dtype)

    q = qkv[:, : HEADS * HEAD_DIM].reshape(reqs, HEADS, HEAD_DIM)
    k = qkv[:, HEADS * HEAD_DIM : HEADS * HEAD_DIM + row].reshape(reqs, KV_HEADS, HEAD_DIM)
    v = qkv[:, HEADS * HEAD_DIM + row :].reshape(reqs, KV_HEADS, HEAD_DIM)
    if norms:
        q, k = rms(q, norms[0]), rms(k, norms[1])
    q, k = rotate(q, cos[:, None], sin[:, None]), rotate(k, cos[:, None], sin[:, None])
    flat = expected_cache.reshape(2, -1, KV_HEADS, HEAD_DIM)
    flat[0, slots], flat[1, slots] = k, widen(narrow(v, cache_dtype), cache_dtype)

    out = np.empty((reqs, HEADS * HEAD_DIM), dtype=np.float32)
    q_norm, k_norm = (ptr(w) for w in norms) if norms else (0, 0)
    _core.cpu.decode_attention_block(
        ptr(out), ptr(qkv), q_norm, k_norm, ptr(cos), ptr(sin), ptr(kv_cache), dtype_id, ptr(slots), ptr(tables),
        ptr(seq_lens), reqs, HEADS, KV_HEADS, HEAD_DIM, ROT_DIM, NUM_BLOCKS, BLOCK_SIZE, tables.shape[1],
        qkv.shape[1], EPS, HEAD_DIM**-0.5, window, 2,
    )  # fmt: skip
    written = widen(kv_cache, cache_dtype)
    # Values are rounded once, as the reference rounds them; keys went through a norm and the rotation
    # (float32 ulps apart), so their rounding may land one step of the cache type away.
    np.testing.assert_array_equal(written[1], expected_cache[1])
    np.testing.assert_allclose(written[0], expected_cache[0], rtol=max(1e-5, ulp), atol=1e-5)
    # Attention over what was written, in float64, from the kernel's rotated queries (qkv is rotated in place).
    rotated = qkv[:, : HEADS * HEAD_DIM].reshape(reqs, HEADS, HEAD_DIM)
    expected = attention(rotated, written.reshape(2, -1, KV_HEADS, HEAD_DIM), tables, seq_lens, window)
    np.testing.assert_allclose(out.reshape(reqs, HEADS, HEAD_DIM), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rotated, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
def test_decode_attention_threads_split_requests_and_heads(cache_dtype: str) -> None:
    """Enough work to wake a second thread (>= 2^16 multiply-adds a thread): results equal one thread's, bit
    for bit (each (request, KV head) pair is computed by one thread, in one order)."""
    dtype_id = CACHE_DTYPES[cache_dtype][0]
    rng = np.random.default_rng(7)
    num_blocks, width = 1600, 330
    seq_lens = np.array([1000, 1, 1301, 640, 1296], dtype=np.int32)  # 2 * 4238 * 64 MACs: three threads
    reqs = len(seq_lens)
    tables = np.stack([rng.permutation(num_blocks)[:width] for _ in seq_lens]).astype(np.int32)
    query = rng.standard_normal((reqs, HEADS, HEAD_DIM), dtype=np.float32)
    kv_cache = narrow(
        rng.standard_normal((2, num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM), dtype=np.float32), cache_dtype
    )
    outs = []
    for threads in (1, 2, 3):
        out = np.full((reqs, HEADS, HEAD_DIM), np.nan, dtype=np.float32)
        _core.cpu.paged_attention_decode(
            ptr(out), ptr(query), ptr(kv_cache), dtype_id, ptr(tables), ptr(seq_lens), reqs, HEADS, KV_HEADS,
            HEAD_DIM, num_blocks, BLOCK_SIZE, width, HEADS * HEAD_DIM, HEAD_DIM**-0.5, 0, threads,
        )  # fmt: skip
        outs.append(out)
    flat = widen(kv_cache, cache_dtype).reshape(2, -1, KV_HEADS, HEAD_DIM)
    np.testing.assert_allclose(outs[0], attention(query, flat, tables, seq_lens, 0), rtol=1e-4, atol=1e-5)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("cache_dtype", list(CACHE_DTYPES))
@pytest.mark.parametrize("window", [0, 11])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 2, 128), (2, 2, 32), (14, 2, 96)])
def test_decode_attention_in_registers(heads: int, kv_heads: int, head_dim: int, window: int, cache_dtype: str) -> None:
    """Head sizes a multiple of 32 take the AVX2 kernel where the CPU has it: eight keys a group within blocks
    of 16 (contexts ending inside a group, on a block's end and just past it), groups of 3, 2, 1 and 7 query
    heads, head_dim 128 and 96 in four and three column passes; 1 and 2 threads."""
    dtype_id = CACHE_DTYPES[cache_dtype][0]
    rng = np.random.default_rng(head_dim + window)
    block_size, num_blocks = 16, 60
    seq_lens = np.array([1, 7, 16, 17, 40, 129], dtype=np.int32)
    reqs, width = len(seq_lens), 9
    tables = np.stack([rng.permutation(num_blocks)[:width] for _ in seq_lens]).astype(np.int32)
    query = rng.standard_normal((reqs, heads, head_dim), dtype=np.float32)
    kv_cache = narrow(
        rng.standard_normal((2, num_blocks, block_size, kv_heads, head_dim), dtype=np.float32), cache_dtype
    )
    flat = widen(kv_cache, cache_dtype).reshape(2, -1, kv_heads, head_dim)
    expected = attention(query, flat, tables, seq_lens, window, block_size)
    for threads in (1, 2):
        out = np.full((reqs, heads, head_dim), np.nan, dtype=np.float32)
        _core.cpu.paged_attention_decode(
            ptr(out), ptr(query), ptr(kv_cache), dtype_id, ptr(tables), ptr(seq_lens), reqs, heads, kv_heads,
            head_dim, num_blocks, block_size, width, heads * head_dim, head_dim**-0.5, window, threads,
        )  # fmt: skip
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cache_dtype", ["float16", "bfloat16"])
def test_reshape_and_cache_rounds_to_nearest_even(cache_dtype: str) -> None:
    """Every rounding case of the narrowing (ties, overflow to infinity, subnormals, NaN, signed zero) against
    numpy's float16 and the reference bfloat16 rounding, on a row long enough for the vector loops and tails."""
    dtype_id = CACHE_DTYPES[cache_dtype][0]
    rng = np.random.default_rng(1)
    ties = [1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8]  # halfway: to even, both ways
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 1e6, 6e-8, 3e-8, 1e-40, *ties], np.float32
    )
    row = 37
    values = np.concatenate([special, rng.standard_normal(row * 4 - len(special), dtype=np.float32) * 100])
    key, value = values[: row * 2].reshape(2, row), values[row * 2 :].reshape(2, row)
    num_slots = 5
    kv_cache = np.zeros((2, num_slots, row), dtype=CACHE_DTYPES[cache_dtype][1])
    slots = np.array([3, 0], dtype=np.int64)
    float32 = 0  # the keys' and values' type id
    _core.cpu.reshape_and_cache(
        ptr(kv_cache), dtype_id, ptr(key), ptr(value), float32, ptr(slots), 2, num_slots, row, row, row
    )
    expected = np.zeros_like(kv_cache)
    expected[0, slots], expected[1, slots] = narrow(key, cache_dtype), narrow(value, cache_dtype)
    if cache_dtype == "float16":  # NaN payloads may differ: compare NaN-ness, then the rest bit for bit
        got, want = kv_cache.view(np.float16), expected.view(np.float16)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(
            np.where(np.isnan(got), 0, got).view(np.uint16), np.where(np.isnan(want), 0, want).view(np.uint16)
        )
    else:
        np.testing.assert_array_equal(kv_cache, expected)


@pytest.mark.parametrize("input_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cache_dtype", ["float32", "float16", "bfloat16"])
def test_reshape_and_cache_from_half_precision_rows(input_dtype: str, cache_dtype: str) -> None:
    """A half-precision model's keys and values (rows inside wider token rows): copied bit for bit into a cache
    of their type, else widened and rounded to the cache's (bfloat16 -> float16 may round or overflow)."""
    rng = np.random.default_rng(2)
    row, stride, num_slots = 37, 50, 6
    tokens = narrow(rng.standard_normal((3, stride), dtype=np.float32) * 3e4, input_dtype)
    key, value = tokens[:, :row], tokens[:, stride - row :]
    kv_cache = np.zeros((2, num_slots, row), dtype=CACHE_DTYPES[cache_dtype][1])
    slots = np.array([5, 1, 2], dtype=np.int64)
    in_id, cache_id = CACHE_DTYPES[input_dtype][0], CACHE_DTYPES[cache_dtype][0]
    key_ptr, value_ptr = ptr(tokens), ptr(tokens) + (stride - row) * 2
    _core.cpu.reshape_and_cache(ptr(kv_cache), cache_id, key_ptr, value_ptr, in_id, ptr(slots), 3, num_slots, row,
                                stride, stride)  # fmt: skip
    expected = np.zeros_like(kv_cache)
    for half, rows in enumerate((key, value)):
        expected[half, slots] = rows if input_dtype == cache_dtype else narrow(widen(rows, input_dtype), cache_dtype)
    np.testing.assert_array_equal(kv_cache.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("d", [1, 8, 13, 64])
def test_silu_and_mul_every_lane_and_tail(d: int) -> None:
    """silu(gate) * up (the vectorised exp, and the last partial vector through the same code) against float64
    math, far into the sigmoid's tails included."""
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((3, 2 * d)) * 6).astype(np.float32)
    x[0, :d] = np.resize(np.array([-100.0, 100.0, 0.0, -20.0, 20.0], np.float32), d)
    out = np.empty((3, d), np.float32)
    _core.cpu.silu_and_mul(ptr(out), ptr(x), 3, d, 1)
    gate, up = x[:, :d].astype(np.float64), x[:, d:].astype(np.float64)
    np.testing.assert_allclose(out, gate / (1 + np.exp(-gate)) * up, rtol=1e-6, atol=1e-30)


def assert_within_one_bf16_ulp(got: np.ndarray, want: np.ndarray) -> None:
    """bfloat16 bits against float64 math: each value is want rounded either way (float32 math and its own
    roundings between), never further."""
    got = widen(got, "bfloat16").astype(np.float64)
    assert np.all(np.abs(got - want) <= np.maximum(np.abs(want), 1e-30) * 2.0**-7)


@pytest.mark.parametrize("threads", [1, 2])
def test_bfloat16_norms_and_activation(threads: int) -> None:
    """The bfloat16 kernels on rows split across threads (64 x 300 values) and a row of a few values."""
    rng = np.random.default_rng(3)
    for rows, hidden in ((64, 300), (1, 5)):
        x = narrow(rng.standard_normal((rows, hidden), dtype=np.float32), "bfloat16")
        residual = narrow(rng.standard_normal((rows, hidden), dtype=np.float32), "bfloat16")
        weight = narrow(rng.uniform(0.5, 1.5, hidden).astype(np.float32), "bfloat16")
        out, new_residual = np.empty_like(x), np.empty_like(x)
        _core.cpu.fused_add_rms_norm_bf16(
            ptr(out), ptr(new_residual), ptr(residual), ptr(x), ptr(weight), rows, hidden, 1e-6, threads
        )
        np.testing.assert_array_equal(
            new_residual, narrow(widen(x, "bfloat16") + widen(residual, "bfloat16"), "bfloat16")
        )
        total = widen(new_residual, "bfloat16").astype(np.float64)
        normed = total / np.sqrt((total**2).mean(-1, keepdims=True) + 1e-6)
        assert_within_one_bf16_ulp(out, normed * widen(weight, "bfloat16"))
        _core.cpu.rms_norm_bf16(ptr(out), ptr(x), ptr(weight), rows, hidden, hidden, 1e-6, threads)
        plain = widen(x, "bfloat16").astype(np.float64)
        plain = plain / np.sqrt((plain**2).mean(-1, keepdims=True) + 1e-6) * widen(weight, "bfloat16")
        assert_within_one_bf16_ulp(out, plain)

        gate_up = narrow(rng.standard_normal((rows, 2 * hidden), dtype=np.float32) * 4, "bfloat16")
        act = np.empty((rows, hidden), np.uint16)
        _core.cpu.silu_and_mul_bf16(ptr(act), ptr(gate_up), rows, hidden, threads)
        gate, up = (widen(part, "bfloat16").astype(np.float64) for part in np.split(gate_up, 2, axis=1))
        # silu's result is rounded before the product: allow that rounding's ulp on top of the product's.
        got = widen(act, "bfloat16").astype(np.float64)
        want = gate / (1 + np.exp(-gate)) * up
        assert np.all(np.abs(got - want) <= np.abs(want) * 2.0**-6 + 1e-30)


def test_unknown_cache_dtype_is_a_value_error() -> None:
    kv_cache, key = np.zeros((2, 1, 4), dtype=np.float32), np.zeros((1, 4), dtype=np.float32)
    slots = np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError, match="no KV cache type 7"):
        _core.cpu.reshape_and_cache(ptr(kv_cache), 7, ptr(key), ptr(key), 0, ptr(slots), 1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="no KV cache type 9"):  # the keys' type is checked the same way
        _core.cpu.reshape_and_cache(ptr(kv_cache), 0, ptr(key), ptr(key), 9, ptr(slots), 1, 1, 4, 4, 4)
