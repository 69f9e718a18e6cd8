"""The blocked-layout float32 matmul (csrc/cpu/blocked_matmul.cpp) on numpy buffers, against float64 math:
torch-free, so that `make test-sanitize` runs it under AddressSanitizer and UBSan. The weight is laid out here
as oneDNN packs it (blocked_layout.py; tests/quantization checks oneDNN's own packing).

The bound is the standard one for a dot product in float32: |ŷ - y| ≤ γ_k Σ|x w| (+ |bias|), γ_k = k·u / (1 - k·u).
"""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core
from tests.core.blocked_layout import blocked

pytestmark = pytest.mark.skipif(not _core.cpu.blocked_matmul_fits(), reason="needs AVX-512")


def ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def matmul(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, threads: int, x_stride: int | None = None):
    rows, k = x.shape[0], weight.shape[1]
    packed, k_padded = blocked(weight)
    out = np.full((rows, weight.shape[0]), np.nan, np.float32)  # every value must be written
    bias_ptr = 0 if bias is None else ptr(bias)
    stride = k if x_stride is None else x_stride
    _core.cpu.blocked_matmul(ptr(out), ptr(x), ptr(packed), bias_ptr, rows, weight.shape[0], k, k_padded, stride,
                             weight.shape[0], threads)  # fmt: skip
    return out


def assert_within_bound(out, x, weight, bias):
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    exact = x64 @ w64.T + (0 if bias is None else bias)
    k = x.shape[1]
    gamma = k * 2.0**-24 / (1 - k * 2.0**-24)
    magnitude = np.abs(x64) @ np.abs(w64).T + (0 if bias is None else np.abs(bias))
    assert np.all(np.abs(out - exact) <= gamma * magnitude + 2.0**-24 * np.abs(exact))


# Rows: tiles of 6 and their remainders, and the 96-row chunks; k: ragged, and past the
# 512-value ranges the sums are carried across; n: a partial last block, and fewer blocks than threads.
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("rows, k, n", [(1, 64, 48), (7, 37, 130), (13, 600, 65), (100, 1100, 200), (200, 96, 64)])
def test_within_the_rounding_bound(rows, k, n, threads):
    rng = np.random.default_rng(rows * k + n)
    weight = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    x = rng.standard_normal((rows, k), dtype=np.float32)
    for b in (bias, None):
        assert_within_bound(matmul(x, weight, b, threads), x, weight, b)


def test_a_row_comes_out_the_same_in_any_batch_and_split():
    """One chain of multiply-adds per output whatever the batch, its tiles, chunks or threads: bit-exact."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((130, 1100), dtype=np.float32)
    bias = rng.standard_normal(130, dtype=np.float32)
    x = rng.standard_normal((200, 1100), dtype=np.float32)
    whole = matmul(x, weight, bias, 2)
    for threads in (1, 3, 8):
        np.testing.assert_array_equal(matmul(x, weight, bias, threads), whole)
    for rows in (1, 5, 6, 97):
        np.testing.assert_array_equal(matmul(x[:rows].copy(), weight, bias, 2), whole[:rows])
    np.testing.assert_array_equal(matmul(x[150:151].copy(), weight, bias, 1), whole[150:151])


def test_rows_a_stride_apart_and_no_rows():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((70, 40), dtype=np.float32)
    wide = rng.standard_normal((9, 56), dtype=np.float32)
    out = matmul(wide, weight, None, 2, x_stride=56)  # the first 40 values of each 56-value row
    np.testing.assert_array_equal(out, matmul(np.ascontiguousarray(wide[:, :40]), weight, None, 2))
    assert matmul(np.zeros((0, 40), np.float32), weight, None, 2).shape == (0, 70)
