"""Embedding lookups from a stored table (ops/quant_kernels.embedding): the rows gguf dequantizes, for ids of
any shape, and ids outside the table refused with an IndexError before the kernel reads anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from kvserve.ops import quant_kernels


@pytest.fixture(scope="module")
def table() -> tuple[quant_kernels.StoredWeight, np.ndarray]:
    values = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    blocks = quants.quantize(values, GGMLQuantizationType.Q8_0)
    stored = quant_kernels.StoredWeight(torch.from_numpy(blocks), int(GGMLQuantizationType.Q8_0), 10, 64)
    return stored, quants.dequantize(blocks, GGMLQuantizationType.Q8_0)


def test_rows_of_any_id_shape(table) -> None:
    stored, dense = table
    ids = torch.tensor([[3, 0], [9, 3]], dtype=torch.int32)
    out = quant_kernels.embedding(ids, stored)
    assert out.shape == (2, 2, 64)
    assert np.array_equal(out.numpy(), dense[ids.numpy()])
    assert quant_kernels.embedding(torch.empty(0, dtype=torch.int64), stored).shape == (0, 64)


@pytest.mark.parametrize("bad", [-1, 10, 2**40])
def test_ids_outside_the_table_are_refused(table, bad: int) -> None:
    with pytest.raises(IndexError, match=r"out of range \[0, 10\)"):
        quant_kernels.embedding(torch.tensor([1, bad]), table[0])
