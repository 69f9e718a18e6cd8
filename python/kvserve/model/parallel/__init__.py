"""Tensor parallelism inside a model: the group a process belongs to and the layers that split across it."""

from __future__ import annotations

from kvserve.model.parallel.linear import ColumnParallelLinear, ParallelLinear, RowParallelLinear
from kvserve.model.parallel.state import (
    TensorParallelGroup,
    init_tensor_parallel,
    local_kv_heads,
    min_over_group,
    tp_group,
)
from kvserve.model.parallel.vocab import VocabParallelEmbedding

__all__ = [
    "ColumnParallelLinear",
    "ParallelLinear",
    "RowParallelLinear",
    "TensorParallelGroup",
    "VocabParallelEmbedding",
    "init_tensor_parallel",
    "local_kv_heads",
    "min_over_group",
    "tp_group",
]
