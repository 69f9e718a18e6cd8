"""A float32 weight laid out as oneDNN packs linear weights and csrc/cpu/blocked_matmul.cpp reads them:
[ceil(n / 64)][k rounded up to 16][64], the 64 output columns of a block for one k contiguous, padding zero."""

from __future__ import annotations

import numpy as np

BLOCK, K_ALIGN = 64, 16


def blocked(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """weight [n, k] in the blocked layout, and its padded k."""
    n, k = weight.shape
    k_padded, blocks = -(-k // K_ALIGN) * K_ALIGN, -(-n // BLOCK)
    padded = np.zeros((blocks * BLOCK, k_padded), np.float32)
    padded[:n, :k] = weight
    return np.ascontiguousarray(padded.reshape(blocks, BLOCK, k_padded).transpose(0, 2, 1)), k_padded
