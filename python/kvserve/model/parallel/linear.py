"""Column- and row-parallel linear layers: `Linear`s whose weight is one rank's share of the checkpoint's.

Both compose with the layer's `LinearMethod` (the method allocates and multiplies the rank's share as if it
were a whole layer); what they add is which share a rank holds, as a `weight_loader` on each parameter that
cuts it out of the full checkpoint tensor, and the all-reduce a row-parallel layer needs. With a group of
one the shares are the whole tensors and no collective runs: TP=1 computes exactly what a plain `Linear` does.

A column-parallel layer fused from several checkpoint projections (q|k|v, gate|up) splits each part on its
own, so rank r holds [q_r | k_r | v_r]: its share of the query heads and of the KV heads, which is what its
attention needs. A row-parallel layer (o_proj, down_proj) takes those local activations, multiplies by its
columns of the weight and sums the partial products over the group: the one all-reduce after attention and
the one after the MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch

from kvserve.model.parallel.state import all_reduce, shard_size, tp_group
from kvserve.model.quantization import Linear, LinearMethod
from kvserve.model.weights import WeightAssembler


def _check_shardable(method: LinearMethod) -> None:
    # Only the plain method is known to shard: a quantized method's scales and packed layouts need their own
    # loaders (a new method is refused here until it has them, rather than split wrongly).
    if tp_group().size > 1 and type(method) is not LinearMethod:
        raise ValueError(
            f"{type(method).__name__} (quantized) weights cannot be split across ranks yet: serve quantized models "
            "with --tensor-parallel-size 1"
        )


class ParallelLinear(Linear):
    """A Linear whose parameters load their rank's share; `output_sizes`: the full rows of each fused part."""

    output_sizes: list[int]

    def load_checkpoint_tensor(
        self, assembler: WeightAssembler, name: str, kind: str, tensor: torch.Tensor, part: int = 0
    ) -> None:
        """One checkpoint tensor of fused part `part` (kind: "weight", "bias", "weight_scale", ...) into the
        parameter prefixed `name`, through the method (which may rename, reshape or skip it) and then the
        parameter's weight loader (which takes this rank's share)."""
        loaded = self.method.checkpoint_tensor(kind, tensor, self.output_sizes[part])
        if loaded is not None:
            assembler.load(f"{name}.{loaded[0]}", loaded[1], part)


class ColumnParallelLinear(ParallelLinear):
    """Output rows split over the group, each fused part separately; no communication."""

    def __init__(self, in_features: int, output_sizes: Sequence[int], bias: bool, method: LinearMethod) -> None:
        _check_shardable(method)
        local_sizes = [shard_size(rows, "a projection's output rows") for rows in output_sizes]
        super().__init__(in_features, sum(local_sizes), bias, method)
        self.output_sizes = list(output_sizes)
        self.local_sizes = local_sizes
        self.local_offsets = [0, *accumulate(local_sizes)]
        for param in self.parameters(recurse=False):  # weight, bias, per-row scales: all indexed by output row
            param.weight_loader = self._load_rows

    def _load_rows(self, tensor: torch.Tensor, part: int) -> tuple[torch.Tensor, int]:
        """(this rank's rows of part `part`, where they go in the fused parameter)."""
        rows = self.local_sizes[part]
        if tp_group().size > 1:
            tensor = tensor.narrow(0, tp_group().rank * rows, rows)
        return tensor, self.local_offsets[part]


class RowParallelLinear(ParallelLinear):
    """Input columns split over the group; the partial products are summed with one all-reduce."""

    def __init__(self, in_features: int, out_features: int, bias: bool, method: LinearMethod) -> None:
        _check_shardable(method)
        super().__init__(shard_size(in_features, "a projection's input columns"), out_features, bias, method)
        self.output_sizes = [out_features]
        self.weight.weight_loader = self._load_columns
        if self.bias is not None:
            self.bias.weight_loader = self._load_bias

    def _load_columns(self, tensor: torch.Tensor, part: int) -> tuple[torch.Tensor, int]:
        if tp_group().size > 1:
            tensor = tensor.narrow(1, tp_group().rank * self.in_features, self.in_features)
        return tensor, 0

    def _load_bias(self, tensor: torch.Tensor, part: int) -> tuple[torch.Tensor, int]:
        # Rank 0 adds the bias, the others zeros: the all-reduce then adds it once, and the multiply keeps
        # its fused bias.
        return (tensor if tp_group().rank == 0 else torch.zeros_like(tensor)), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.method.apply(self, x)
        return all_reduce(out) if tp_group().size > 1 else out
