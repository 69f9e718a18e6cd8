"""kvserve._core.cpu's row selections (row_argmax, row_topk) and DecodeLayers against numpy references.

numpy only (no torch), so `make test-sanitize` runs them under ASan/UBSan: the kernels' scratch buffers,
tails and strided rows are what the sanitizers watch. The bit-exactness of DecodeLayers against the op-by-op
model path is tested with the real model in tests/model/test_cpu_decode.py; here it is checked against a
float64 reference of a decoder layer with float32 weights (format F32) within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core
from tests.core.blocked_layout import blocked

cpu = _core.cpu
F32 = 0


def _special_rows(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    """[rows, width + 3] float32 whose first `width` columns hold ties, NaN and infinities in some rows."""
    storage = rng.standard_normal((rows, width + 3)).astype(np.float32)
    x = storage[:, :width]
    x[1] = -np.inf
    x[2, -1] = np.nan
    x[3, ::3] = 2.5
    x[4] = 1.0
    x[5, [0, width // 2]] = np.nan
    x[6] = np.round(x[6] * 4)
    x[7, -1] = np.inf
    return storage


@pytest.mark.parametrize("width", [1, 7, 16, 33, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_row_argmax_is_the_first_maximum_nan_first(width: int, threads: int) -> None:
    storage = _special_rows(np.random.default_rng(width), 64, width)
    x = storage[:, :width]
    out = np.empty(64, dtype=np.int64)
    cpu.row_argmax(out.ctypes.data, storage.ctypes.data, 64, width, storage.shape[1], threads)
    nan_rows = np.isnan(x).any(axis=1)
    expected = np.where(nan_rows, np.isnan(x).argmax(axis=1), np.nanargmax(np.where(np.isnan(x), -np.inf, x), axis=1))
    assert out.tolist() == expected.tolist()


@pytest.mark.parametrize(("width", "k"), [(1, 1), (13, 5), (40, 40), (1000, 1), (1000, 37), (1000, 256)])
@pytest.mark.parametrize("threads", [1, 2])
def test_row_topk_is_the_stable_descending_sort_prefix(width: int, k: int, threads: int) -> None:
    storage = _special_rows(np.random.default_rng(width + k), 64, width)
    x = storage[:, :width]
    values = np.empty((64, k), dtype=np.float32)
    ids = np.empty((64, k), dtype=np.int64)
    cpu.row_topk(values.ctypes.data, ids.ctypes.data, storage.ctypes.data, 64, width, storage.shape[1], k, threads)
    # NaN first (as the largest), then descending values, ties by lower index: lexsort's last key is primary.
    index = np.broadcast_to(np.arange(width), x.shape)
    expected = np.lexsort((index, -np.where(np.isnan(x), np.inf, x), ~np.isnan(x)), axis=-1)
    assert ids.tolist() == expected[:, :k].tolist()
    np.testing.assert_array_equal(values, np.take_along_axis(x, expected[:, :k], axis=1))


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return weight * (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps))


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """GPT-NeoX rotary of x [R, heads, D] by cos/sin [R, D/2] (the whole head rotated)."""
    half = cos.shape[1]
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 2 * half :]], axis=-1)


# The segment format of a float32 weight in the blocked layout (kvserve::cpu::StoredProjection).
BLOCKED_FLOAT32 = -1


@pytest.mark.parametrize("layout", ["stored rows", "blocked"])
def test_decode_layers_equal_a_float64_reference(layout: str) -> None:
    """Two layers (the second with biases, q/k norms and a sliding window of 3) over three requests whose
    contexts sit in shuffled blocks; float32 weights (F32 stored rows, or oneDNN's blocked layout where the CPU
    has the blocked kernel), so only the rounding differs from the reference."""
    if layout == "blocked" and not cpu.blocked_matmul_fits():
        pytest.skip("the blocked kernel needs AVX-512")
    rng = np.random.default_rng(0)
    hidden, heads, kv_heads, head_dim, inter, eps = 32, 4, 2, 8, 48, 1e-5
    scale = head_dim**-0.5
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    block_size, num_blocks, seq_lens = 4, 9, [5, 9, 2]
    reqs = len(seq_lens)
    keep: list[np.ndarray] = []  # the arrays whose addresses the kernel holds

    def f32(*shape: int, spread: float = 0.3) -> np.ndarray:
        keep.append(a := (spread * rng.standard_normal(shape)).astype(np.float32))
        return a

    def projection(out: int, k: int, bias: bool) -> tuple[np.ndarray, np.ndarray | None, tuple]:
        w, b = f32(out, k), f32(out) if bias else None
        bias_pointer = 0 if b is None else b.ctypes.data
        if layout == "stored rows":
            return w, b, ([(w.ctypes.data, F32, out)], 4 * k, out, bias_pointer, 0)
        keep.append(packed := blocked(w)[0])
        return w, b, ([(packed.ctypes.data, BLOCKED_FLOAT32, out)], 0, out, bias_pointer, blocked(w)[1])

    layers, specs = [], []
    for i in range(2):
        extras = i == 1
        qkv, o = projection(q_size + 2 * kv_size, hidden, extras), projection(hidden, q_size, extras)
        gate_up, down = projection(2 * inter, hidden, extras), projection(hidden, inter, extras)
        norms = [1 + f32(hidden, spread=0.1), 1 + f32(hidden, spread=0.1)]
        qk = [1 + f32(head_dim, spread=0.1), 1 + f32(head_dim, spread=0.1)] if extras else [None, None]
        keep.extend(n for n in norms + qk if n is not None)
        window = 3 if extras else 0
        layers.append((qkv, o, gate_up, down, norms, qk, window))
        pointers = [0 if n is None else n.ctypes.data for n in norms + qk]
        specs.append((qkv[2], o[2], gate_up[2], down[2], *pointers, window))
    final_norm = 1 + f32(hidden, spread=0.1)
    keep.append(final_norm)
    decode = cpu.DecodeLayers(
        hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim, intermediate=inter, rot_dim=head_dim,
        eps=eps, scale=scale, layers=specs, final_norm=final_norm.ctypes.data,
    )  # fmt: skip

    caches = [f32(2, num_blocks, block_size, kv_heads, head_dim, spread=1.0) for _ in range(2)]
    tables = rng.permutation(num_blocks).astype(np.int32).reshape(reqs, 3)
    lens = np.array(seq_lens, dtype=np.int32)
    last = lens.astype(np.int64) - 1
    slots = tables[np.arange(reqs), last // block_size].astype(np.int64) * block_size + last % block_size
    angles = rng.uniform(0, 6.3, (reqs, head_dim // 2))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    x = f32(reqs, hidden, spread=1.0)
    reference_caches = [c.astype(np.float64) for c in caches]

    out = np.empty((reqs, hidden), dtype=np.float32)
    # The 0 after the caches: they are float32 (kvserve::cpu::CacheDtype).
    decode.run(
        out.ctypes.data, x.ctypes.data, cos.ctypes.data, sin.ctypes.data, [c.ctypes.data for c in caches], 0,
        slots.ctypes.data, tables.ctypes.data, lens.ctypes.data, reqs, num_blocks, block_size, tables.shape[1], 2,
    )  # fmt: skip

    def linear(p: tuple, inputs: np.ndarray) -> np.ndarray:
        w, b, _ = p
        y = inputs @ w.astype(np.float64).T
        return y if b is None else y + b

    residual, layer_out = x.astype(np.float64), None
    for (qkv, o, gate_up, down, norms, qk, window), cache in zip(layers, reference_caches):
        if layer_out is not None:
            residual = residual + layer_out
        fused = linear(qkv, _rms(residual, norms[0], eps))
        q = fused[:, :q_size].reshape(reqs, heads, head_dim)
        k = fused[:, q_size : q_size + kv_size].reshape(reqs, kv_heads, head_dim)
        v = fused[:, q_size + kv_size :].reshape(reqs, kv_heads, head_dim)
        if qk[0] is not None:
            q, k = _rms(q, qk[0], eps), _rms(k, qk[1], eps)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        flat = cache.reshape(2, num_blocks * block_size, kv_heads, head_dim)
        flat[0, slots], flat[1, slots] = k, v
        attn = np.zeros((reqs, heads, head_dim))
        for r, length in enumerate(seq_lens):
            first = max(0, length - window) if window else 0
            positions = np.arange(first, length)
            rows = tables[r, positions // block_size].astype(np.int64) * block_size + positions % block_size
            for h in range(heads):
                g = h // (heads // kv_heads)
                scores = flat[0, rows, g] @ q[r, h] * scale
                p = np.exp(scores - scores.max())
                attn[r, h] = (p / p.sum()) @ flat[1, rows, g]
        residual = residual + linear(o, attn.reshape(reqs, q_size))
        gu = linear(gate_up, _rms(residual, norms[1], eps))
        gate, up = gu[:, :inter], gu[:, inter:]
        layer_out = linear(down, gate / (1 + np.exp(-gate)) * up)
    expected = _rms(residual + layer_out, final_norm, eps)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(caches, reference_caches):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
