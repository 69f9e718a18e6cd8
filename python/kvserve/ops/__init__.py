"""kvserve's ops, each exposed once.

Each op is registered as a torch custom op (`kvserve::<name>`), the entry point CUDA kernels and
torch.compile use. On CUDA tensors the op runs the CUDA kernels (`ops/cuda_kernels.py`, registered when the
`kvserve._kernels` module was built), or the pure-torch reference (`ops/reference.py`) where a kernel does not
fit the inputs; the reference is also the test oracle. On CPU the wrappers skip the dispatcher (~40 µs a
call there, more than most ops at small sizes) and run the C++ float32 kernels (`ops/cpu_kernels.py`)
where the inputs fit them, else the reference.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

from kvserve.ops import cpu_kernels, gemm_reference, reference

F = TypeVar("F", bound=Callable)

# Each op's torch custom op, by name: the CUDA kernels register on these.
CUSTOM_OPS: dict[str, torch.library.CustomOpDef] = {}


def _custom_op(fn: F, cpu_kernel: Callable, mutates_args: tuple[str, ...] = ()) -> F:
    op = torch.library.custom_op(f"kvserve::{fn.__name__}", fn, mutates_args=mutates_args)
    CUSTOM_OPS[fn.__name__] = op

    @functools.wraps(fn)
    def call(first: torch.Tensor, *args, **kwargs):
        if first.is_cuda:
            return op(first, *args, **kwargs)
        result = cpu_kernel(first, *args, **kwargs)
        return fn(first, *args, **kwargs) if result is NotImplemented else result

    return call  # type: ignore[return-value]


def _no_cpu_kernel(*args, **kwargs):
    return NotImplemented


rms_norm = _custom_op(reference.rms_norm, cpu_kernels.rms_norm)
fused_add_rms_norm = _custom_op(reference.fused_add_rms_norm, cpu_kernels.fused_add_rms_norm)
silu_and_mul = _custom_op(reference.silu_and_mul, cpu_kernels.silu_and_mul)
rotary_embedding = _custom_op(reference.rotary_embedding, cpu_kernels.rotary_embedding)
rotary_embedding_gptj = _custom_op(reference.rotary_embedding_gptj, _no_cpu_kernel)
reshape_and_cache = _custom_op(reference.reshape_and_cache, cpu_kernels.reshape_and_cache, mutates_args=("kv_cache",))
paged_attention = _custom_op(reference.paged_attention, cpu_kernels.paged_attention)
cross_attention = _custom_op(reference.cross_attention, cpu_kernels.cross_attention)
# Linear layers' matrix products (CUTLASS on CUDA; on CPU the reference: float32 products of the dequantized
# operands).
gemm = _custom_op(gemm_reference.gemm, _no_cpu_kernel)
scaled_mm = _custom_op(gemm_reference.scaled_mm, _no_cpu_kernel)
dynamic_quantize = _custom_op(gemm_reference.dynamic_quantize, _no_cpu_kernel)


def attention_block(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    q_norm: torch.Tensor | None,
    k_norm: torch.Tensor | None,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
    sliding_window: int = 0,
) -> torch.Tensor:
    """A decoder layer's attention between its qkv and output projections: qkv [T, (H + 2 KVH) * D] (q | k |
    v) -> [T, H * D]. Per-head q/k RMSNorm when the norms are given, GPT-NeoX rotary by cos/sin [T, rot / 2],
    keys and values into kv_cache at slot_mapping, paged attention over each request's context.

    On CPU a decode step runs it as one C++ call (the per-op cost of ~5 ops a layer is what dominates small
    models there); elsewhere, and for inputs that kernel does not take, it composes the ops above.
    """
    if not qkv.is_cuda:
        out = cpu_kernels.attention_block(
            qkv, num_heads, num_kv_heads, head_dim, q_norm, k_norm, eps, cos, sin, kv_cache, slot_mapping,
            block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len, scale, sliding_window,
        )  # fmt: skip
        if out is not NotImplemented:
            return out
    num_tokens, q_size, kv_size = qkv.shape[0], num_heads * head_dim, num_kv_heads * head_dim
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(num_tokens, num_heads, head_dim)
    k = k.view(num_tokens, num_kv_heads, head_dim)
    v = v.reshape(num_tokens, num_kv_heads, head_dim)
    if q_norm is not None:
        q = rms_norm(q, q_norm, eps)
        k = rms_norm(k, k_norm, eps)
    q, k = rotary_embedding(q, k, cos, sin)
    reshape_and_cache(k, v, kv_cache, slot_mapping)
    attn = paged_attention(
        q.contiguous(), kv_cache, block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len, scale,
        sliding_window,
    )  # fmt: skip
    return attn.view(num_tokens, q_size)


# True when kvserve._kernels was built (nvcc was found at build time); it imports without a GPU.
HAS_CUDA_KERNELS = importlib.util.find_spec("kvserve._kernels") is not None
# Each op's CUDA implementation, with its reference's signature (none without kvserve._kernels; no GEMMs in a
# build configured with KVSERVE_CUDA_GEMM=OFF, such as `make install`'s).
CUDA_KERNELS: dict[str, Callable] = {}
HAS_GEMM_KERNELS = False
if HAS_CUDA_KERNELS:
    from kvserve import _kernels
    from kvserve.ops import cuda_kernels

    CUDA_KERNELS.update(cuda_kernels.KERNELS)
    HAS_GEMM_KERNELS = hasattr(_kernels, "gemm_configs")
    if HAS_GEMM_KERNELS:
        from kvserve.ops import cuda_gemm

        CUDA_KERNELS.update(cuda_gemm.KERNELS)
    for _name, _kernel in CUDA_KERNELS.items():
        CUSTOM_OPS[_name].register_kernel("cuda")(_kernel)


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Within the block, CUDA tensors run the torch reference ops instead of the CUDA kernels."""
    if not HAS_CUDA_KERNELS:
        yield
        return
    with cuda_kernels.reference_only():
        yield


__all__ = [
    "HAS_CUDA_KERNELS",
    "attention_block",
    "cross_attention",
    "dynamic_quantize",
    "gemm",
    "fused_add_rms_norm",
    "paged_attention",
    "reference_only",
    "reshape_and_cache",
    "rms_norm",
    "rotary_embedding",
    "rotary_embedding_gptj",
    "scaled_mm",
    "silu_and_mul",
]
