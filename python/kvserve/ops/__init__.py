"""kvserve's ops, each exposed once.

Each op is registered as a torch custom op (`kvserve::<name>`), the entry point CUDA kernels and
torch.compile use; until a kernel registers for CUDA, the op runs the pure-torch reference
(`ops/reference.py`), which is also the test oracle. On CPU the wrappers skip the dispatcher (~40 µs a
call there, more than most ops at small sizes) and run the C++ float32 kernels (`ops/cpu_kernels.py`)
where the inputs fit them, else the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

from kvserve.ops import cpu_kernels, reference

F = TypeVar("F", bound=Callable)


def _custom_op(fn: F, cpu_kernel: Callable, mutates_args: tuple[str, ...] = ()) -> F:
    op = torch.library.custom_op(f"kvserve::{fn.__name__}", fn, mutates_args=mutates_args)

    @functools.wraps(fn)
    def call(first: torch.Tensor, *args, **kwargs):
        if first.is_cuda:
            return op(first, *args, **kwargs)
        result = cpu_kernel(first, *args, **kwargs)
        return fn(first, *args, **kwargs) if result is NotImplemented else result

    return call  # type: ignore[return-value]


rms_norm = _custom_op(reference.rms_norm, cpu_kernels.rms_norm)
fused_add_rms_norm = _custom_op(reference.fused_add_rms_norm, cpu_kernels.fused_add_rms_norm)
silu_and_mul = _custom_op(reference.silu_and_mul, cpu_kernels.silu_and_mul)
rotary_embedding = _custom_op(reference.rotary_embedding, cpu_kernels.rotary_embedding)
reshape_and_cache = _custom_op(reference.reshape_and_cache, cpu_kernels.reshape_and_cache, mutates_args=("kv_cache",))
paged_attention = _custom_op(reference.paged_attention, cpu_kernels.paged_attention)

__all__ = ["fused_add_rms_norm", "paged_attention", "reshape_and_cache", "rms_norm", "rotary_embedding", "silu_and_mul"]
