"""The parallel layers against the unsharded ones, without processes: each rank's layer is built under a
stand-in group (rank r of N), its weight loaders take their share of the full checkpoint tensors, and the
collectives are done by hand (the sum over ranks an all-reduce computes, the concatenation an all-gather
does)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from kvserve.model.parallel import (
    ColumnParallelLinear,
    ParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    state,
)
from kvserve.model.quantization import Int8Fp8LinearMethod, LinearMethod, QuantizationConfig
from kvserve.model.weights import WeightAssembler


@contextlib.contextmanager
def as_rank(rank: int, size: int) -> Iterator[None]:
    """Builds and loads a layer as rank `rank` of `size` would; no collective may run inside."""
    previous = state._group
    state._group = state.TensorParallelGroup(rank, size)
    try:
        yield
    finally:
        state._group = previous


def load(layer: torch.nn.Module, tensors: list[tuple[str, torch.Tensor, int]]) -> None:
    """Full checkpoint tensors (kind, tensor, fused part) through the layer's weight loaders; all must be filled."""
    holder = torch.nn.Module()
    holder.layer = layer
    assembler = WeightAssembler(holder)
    for kind, tensor, part in tensors:
        if isinstance(layer, ParallelLinear):
            layer.load_checkpoint_tensor(assembler, "layer", kind, tensor, part)
        else:
            assembler.load(f"layer.{kind}", tensor)
    assembler.finish()


def test_column_parallel_fused_qkv_takes_each_parts_share():
    torch.manual_seed(0)
    hidden, q, kv = 16, 8, 4  # 4 query heads and 2 KV heads of 2: rank r holds q heads 2r, 2r+1 and KV head r
    wq, wk, wv = torch.randn(q, hidden), torch.randn(kv, hidden), torch.randn(kv, hidden)
    bq, bk, bv = torch.randn(q), torch.randn(kv), torch.randn(kv)
    x = torch.randn(3, hidden)
    full = F.linear(x, torch.cat([wq, wk, wv]), torch.cat([bq, bk, bv]))
    outs = []
    for rank in range(2):
        with as_rank(rank, 2):
            layer = ColumnParallelLinear(hidden, [q, kv, kv], True, LinearMethod())
            load(
                layer,
                [
                    ("weight", wq, 0),
                    ("weight", wk, 1),
                    ("weight", wv, 2),
                    ("bias", bq, 0),
                    ("bias", bk, 1),
                    ("bias", bv, 2),
                ],
            )
        half_q, half_kv = slice(rank * 4, rank * 4 + 4), slice(rank * 2, rank * 2 + 2)
        assert torch.equal(layer.weight, torch.cat([wq[half_q], wk[half_kv], wv[half_kv]]))
        assert torch.equal(layer.bias, torch.cat([bq[half_q], bk[half_kv], bv[half_kv]]))
        outs.append(layer(x))
    # Rank r's output is [q_r | k_r | v_r]: regroup by part to compare with the unsharded layer.
    regrouped = torch.cat([torch.cat([o[:, a:b] for o in outs], dim=1) for a, b in ((0, 4), (4, 6), (6, 8))], dim=1)
    torch.testing.assert_close(regrouped, full)


def test_row_parallel_sums_to_the_unsharded_layer_with_the_bias_once():
    torch.manual_seed(1)
    w, b, x = torch.randn(6, 8), torch.randn(6), torch.randn(3, 8)
    partial_sums = []
    for rank in range(2):
        with as_rank(rank, 2):
            layer = RowParallelLinear(8, 6, True, LinearMethod())
            load(layer, [("weight", w, 0), ("bias", b, 0)])
            assert torch.equal(layer.weight, w[:, rank * 4 : rank * 4 + 4])
            assert torch.equal(layer.bias, b if rank == 0 else torch.zeros_like(b))
            partial_sums.append(layer.method.apply(layer, x[:, rank * 4 : rank * 4 + 4]))  # before the all-reduce
    torch.testing.assert_close(sum(partial_sums), F.linear(x, w, b))


def test_one_rank_layers_are_the_whole_projection():
    torch.manual_seed(2)
    w, x = torch.randn(6, 8), torch.randn(3, 8)
    row = RowParallelLinear(8, 6, False, LinearMethod())
    load(row, [("weight", w, 0)])
    column = ColumnParallelLinear(8, [2, 4], False, LinearMethod())
    load(column, [("weight", w[:2], 0), ("weight", w[2:], 1)])
    assert torch.equal(row(x), F.linear(x, w)) and torch.equal(column(x), F.linear(x, w))


def test_vocab_parallel_embedding_and_logits_with_a_padded_last_shard():
    torch.manual_seed(3)
    vocab, hidden = 11, 4  # 3 ranks of 4 rows: the last holds ids 8..10 and one zero row
    table, ids, h = torch.randn(vocab, hidden), torch.tensor([0, 5, 10, 7, 3]), torch.randn(2, hidden)
    lookups, logits = [], []
    for rank in range(3):
        with as_rank(rank, 3):
            embedding = VocabParallelEmbedding(vocab, hidden)
            load(embedding, [("weight", table, 0)])
        expected_rows = table[rank * 4 : rank * 4 + 4]
        assert torch.equal(embedding.weight[: len(expected_rows)], expected_rows)
        assert not embedding.weight[len(expected_rows) :].any()
        local = ids - embedding.start
        elsewhere = (local < 0) | (local >= embedding.shard_rows)
        lookups.append(
            F.embedding(local.masked_fill(elsewhere, 0), embedding.weight).masked_fill(elsewhere[:, None], 0)
        )
        logits.append(F.linear(h, embedding.weight))
    torch.testing.assert_close(sum(lookups), F.embedding(ids, table))
    torch.testing.assert_close(torch.cat(logits, dim=-1)[:, :vocab], F.linear(h, table))


def test_uneven_heads_and_quantized_methods_are_refused():
    with as_rank(0, 3), pytest.raises(ValueError, match=r"not divisible by --tensor-parallel-size 3"):
        ColumnParallelLinear(8, [8, 4, 4], False, LinearMethod())
    fp8 = Int8Fp8LinearMethod(QuantizationConfig(method="fp8", weight_dtype=torch.float8_e4m3fn))
    with as_rank(0, 2), pytest.raises(ValueError, match="cannot be split across ranks"):
        RowParallelLinear(8, 8, False, fp8)
