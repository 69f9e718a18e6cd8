"""The stored-format matmul kernels (csrc/cpu/quant_matmul.cpp) against gguf's reference dequantizers.

numpy only (no torch), so `make test-sanitize` runs them under ASan/UBSan too.

Tolerance of a product, derived rather than guessed. Output j is s = Σ_k x_k w_k over K terms. The oracle
dequantizes W with gguf's numpy code and multiplies in float32; the kernel dequantizes the same blocks
(computing each value as gguf does, scale * quant [+/- offset], except that the compiler may fuse the
multiply-add: at most one rounding of u = 2^-24 relative fewer) and accumulates in its own order, in
partial sums per SIMD lane, with FMAs. Any order of summing K float32 products (fused or not) has error at
most γ_K · Σ|x_k w_k| with γ_K = K u / (1 - K u) (Higham, Accuracy and Stability, §3.1), so two orders
differ by at most 2 γ_K · Σ|x_k w_k|, and the fused dequantization adds u · Σ|x_k w_k|:

    |kernel - oracle| <= (2 γ_K + 2 u) · (|x| · |W|ᵀ)_j        (one u of slack for the bound's own rounding)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from kvserve import _core

cpu = _core.cpu
U = 2.0**-24

BLOCK_FORMATS = [
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_1,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.Q4_K,
    GGMLQuantizationType.Q5_K,
    GGMLQuantizationType.Q6_K,
]
# Byte offsets of the f16 fields (scales, minimums) of each block format: random bytes there could be NaN.
HALF_FIELDS = {
    GGMLQuantizationType.Q4_0: (0,),
    GGMLQuantizationType.Q4_1: (0, 2),
    GGMLQuantizationType.Q8_0: (0,),
    GGMLQuantizationType.Q4_K: (0, 2),
    GGMLQuantizationType.Q5_K: (0, 2),
    GGMLQuantizationType.Q6_K: (208,),
}
ROW_FORMATS = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.BF16: None,  # numpy has no bf16: rows are the high halves of float32 values
}


def random_blocks(fmt: GGMLQuantizationType, rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, row bytes] of random quants, with scales/minimums random finite halves."""
    values_per_block, block_bytes = GGML_QUANT_SIZES[fmt]
    blocks = rng.integers(0, 256, size=(rows, k // values_per_block, block_bytes), dtype=np.uint8)
    for offset in HALF_FIELDS[fmt]:
        halves = rng.uniform(-0.02, 0.02, size=blocks.shape[:2]).astype(np.float16)
        blocks[:, :, offset : offset + 2] = halves.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return np.ascontiguousarray(blocks.reshape(rows, -1))


def random_rows(
    fmt: GGMLQuantizationType, rows: int, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(stored uint8 rows, their float32 values)."""
    values = rng.standard_normal((rows, k)).astype(np.float32)
    if fmt == GGMLQuantizationType.BF16:
        high = (values.view(np.uint32) >> 16).astype(np.uint16)
        return high.view(np.uint8).reshape(rows, -1), (high.astype(np.uint32) << 16).view(np.float32)
    stored = values.astype(ROW_FORMATS[fmt])
    return stored.view(np.uint8).reshape(rows, -1), stored.astype(np.float32)


def weights(fmt: GGMLQuantizationType, rows: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if fmt in ROW_FORMATS:
        return random_rows(fmt, rows, k, rng)
    blocks = random_blocks(fmt, rows, k, rng)
    return blocks, quants.dequantize(blocks, fmt).reshape(rows, k).astype(np.float32)


def product_tolerance(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    gamma = k * U / (1 - k * U)
    return (2 * gamma + 2 * U) * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T)


def matmul(x: np.ndarray, stored: np.ndarray, fmt: int, n: int, k: int, threads: int) -> np.ndarray:
    out = np.full((x.shape[0], n), np.nan, dtype=np.float32)
    cpu.quant_matmul(out.ctypes.data, x.ctypes.data, stored.ctypes.data, int(fmt), x.shape[0], n, k,
                     stored.shape[1], k, n, threads)  # fmt: skip
    return out


CASES = [(fmt, 3 * GGML_QUANT_SIZES[fmt][0]) for fmt in BLOCK_FORMATS] + [(fmt, 769) for fmt in ROW_FORMATS]


# Activation rows: one, each register tile height (8 and 4 on AVX-512, 4 on AVX2) and the halves that finish a
# ragged batch (23 = 16 + 4 + 2 + 1), and more than one 64-row panel (130 = 64 + 64 + 2); 37 weight rows leave a
# ragged column of tiles two and four wide.
@pytest.mark.parametrize("m", [1, 3, 8, 16, 23, 130])
@pytest.mark.parametrize(("fmt", "k"), CASES, ids=[f"{fmt.name}-k{k}" for fmt, k in CASES])
def test_matmul_within_the_accumulation_bound(fmt: GGMLQuantizationType, k: int, m: int) -> None:
    n = 37
    stored, dense = weights(fmt, n, k, seed=m)
    x = np.random.default_rng(100 + m).standard_normal((m, k)).astype(np.float32)
    expected = x @ dense.T
    for threads in (1, 2):
        got = matmul(x, stored, fmt, n, k, threads)
        assert np.all(np.abs(got.astype(np.float64) - expected) <= product_tolerance(x, dense)), (fmt.name, threads)


@pytest.mark.parametrize(("fmt", "k"), CASES, ids=[f"{fmt.name}-k{k}" for fmt, k in CASES])
def test_rows_split_across_threads(fmt: GGMLQuantizationType, k: int) -> None:
    """Enough work for two threads: their row ranges meet on a tile boundary, every row is written once."""
    n, m = 211, 11
    stored, dense = weights(fmt, n, k, seed=5)
    x = np.random.default_rng(6).standard_normal((m, k)).astype(np.float32)
    got = matmul(x, stored, fmt, n, k, threads=2)
    assert np.all(np.abs(got.astype(np.float64) - x @ dense.T) <= product_tolerance(x, dense)), fmt.name
    np.testing.assert_array_equal(got, matmul(x, stored, fmt, n, k, threads=1))


@pytest.mark.parametrize(("fmt", "k"), CASES, ids=[f"{fmt.name}-k{k}" for fmt, k in CASES])
def test_dequantize_equals_gguf(fmt: GGMLQuantizationType, k: int) -> None:
    rows = 9
    stored, dense = weights(fmt, rows, k, seed=1)
    out = np.full((rows, k), np.nan, dtype=np.float32)
    cpu.dequantize_weight_rows(out.ctypes.data, stored.ctypes.data, int(fmt), rows, k, stored.shape[1], 2)
    # Each value is one product (and one sum): a fused multiply-add may round once less than numpy.
    np.testing.assert_allclose(out, dense, rtol=2 * U, atol=2 * U * float(np.abs(dense).max()))
    ids = np.array([4, 0, 8, 4], dtype=np.int64)
    gathered = np.full((len(ids), k), np.nan, dtype=np.float32)
    cpu.dequantize_gathered_rows(gathered.ctypes.data, stored.ctypes.data, int(fmt), ids.ctypes.data, len(ids), k,
                                 stored.shape[1])  # fmt: skip
    np.testing.assert_array_equal(gathered, out[ids])


def test_padded_rows_and_strided_output() -> None:
    """A fused projection: rows padded to a wider stride, results written into a column slice."""
    fmt, n, k, m = GGMLQuantizationType.Q4_K, 5, 512, 3
    stored, dense = weights(fmt, n, k, seed=7)
    padded = np.zeros((n, stored.shape[1] + 66), dtype=np.uint8)
    padded[:, : stored.shape[1]] = stored
    x = np.random.default_rng(8).standard_normal((m, k)).astype(np.float32)
    out = np.full((m, n + 4), -1.0, dtype=np.float32)
    cpu.quant_matmul(out[:, 2:].ctypes.data, x.ctypes.data, padded.ctypes.data, int(fmt), m, n, k, padded.shape[1],
                     k, n + 4, 1)  # fmt: skip
    assert np.all(out[:, :2] == -1.0) and np.all(out[:, 2 + n :] == -1.0)
    assert np.all(np.abs(out[:, 2 : 2 + n] - x @ dense.T) <= product_tolerance(x, dense))


def test_row_bytes_and_refusals() -> None:
    assert cpu.weight_row_bytes(int(GGMLQuantizationType.Q4_1), 576) == 18 * 20
    assert cpu.weight_row_bytes(int(GGMLQuantizationType.Q6_K), 512) == 2 * 210
    assert cpu.weight_row_bytes(int(GGMLQuantizationType.BF16), 769) == 2 * 769
    with pytest.raises(ValueError, match="no CPU kernel"):
        cpu.weight_row_bytes(int(GGMLQuantizationType.Q5_0), 64)
    with pytest.raises(ValueError, match="whole number of blocks"):
        cpu.weight_row_bytes(int(GGMLQuantizationType.Q4_K), 300)
    stored, _ = weights(GGMLQuantizationType.Q8_0, 2, 64, seed=0)
    x = np.zeros((1, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="row stride"):
        cpu.quant_matmul(0, x.ctypes.data, stored.ctypes.data, int(GGMLQuantizationType.Q8_0), 1, 2, 64, 10, 64, 2, 1)


@pytest.mark.skipif("KVSERVE_CPU_ISA" in os.environ, reason="already running under a capped instruction set")
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_narrower_builds(isa: str) -> None:
    """The same checks on the AVX2 and baseline builds of the loops (the widest the CPU has runs above)."""
    env = {**os.environ, "KVSERVE_CPU_ISA": isa}
    check = subprocess.run(
        [sys.executable, "-c", "from kvserve import _core; print(_core.cpu.quant_matmul_isa())"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    if check.stdout.strip() != isa:
        pytest.skip(f"this CPU has no {isa} build to cap at (got {check.stdout.strip()})")
    tests = ["-k", "matmul or dequantize or padded or threads", "-q", "-p", "no:cacheprovider", __file__]
    result = subprocess.run([sys.executable, "-m", "pytest", *tests], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
