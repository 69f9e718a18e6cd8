"""This process's place in the tensor-parallel group, and the two collectives the parallel layers use.

One model runner per process: a tensor-parallel worker calls `init_tensor_parallel` once, before it builds its
model; every other process (TP=1, the engine's own process) keeps the default, a group of one, in which the
collectives are never called.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kvserve.model.model_config import ModelConfig


@dataclass(frozen=True, slots=True)
class TensorParallelGroup:
    rank: int = 0
    size: int = 1


_group = TensorParallelGroup()


def tp_group() -> TensorParallelGroup:
    return _group


def init_tensor_parallel(rank: int, size: int, init_method: str, backend: str, timeout_s: float) -> None:
    """Joins the group (NCCL on CUDA, gloo on CPU) through the rendezvous at `init_method` (file:// or tcp://)."""
    global _group
    dist.init_process_group(
        backend, init_method=init_method, rank=rank, world_size=size, timeout=datetime.timedelta(seconds=timeout_s)
    )
    _group = TensorParallelGroup(rank, size)


def shard_size(total: int, what: str) -> int:
    """`total` split evenly over the group; refuses a split that is not even (heads, intermediate rows)."""
    if total % _group.size:
        raise ValueError(f"{what} ({total}) is not divisible by --tensor-parallel-size {_group.size}")
    return total // _group.size


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sums `x` over the group, in place."""
    dist.all_reduce(x)
    return x


def all_gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    """[..., n] on every rank -> [..., size * n], rank-ordered, on every rank."""
    parts = [torch.empty_like(x) for _ in range(_group.size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)


def min_over_group(value: int) -> int:
    """The smallest of the ranks' `value`s (KV block counts: every rank must hold the same number)."""
    if _group.size == 1:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def local_kv_heads(config: ModelConfig) -> int:
    """The KV heads this process caches: its tensor-parallel share."""
    return config.num_key_value_heads // tp_group().size
