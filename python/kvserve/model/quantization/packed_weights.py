"""Float weights on CPU pre-packed once, at load, into oneDNN's blocked layout.

F.linear on a plain float32 weight goes to MKL's sgemm, which re-packs the weight at every call: at decode
batch sizes on this project's CPUs that is 82-134 GFLOP/s against 143-201 for oneDNN on a weight packed
ahead of time, and a step of bench_throughput's float32 Llama took 20.6 ms against 12.1 (RESULTS.md, #14).
bfloat16 already runs in oneDNN; packing saves its per-call reorder. The packed tensor replaces the dense
one (same bytes), and each output row depends on its own input row only, whatever the batch.

On a CPU without bfloat16 instructions (AVX2 only) oneDNN refuses to pack bfloat16, and torch's bfloat16
matmul there ran ~18 GFLOP/s; a bfloat16 weight then stays dense and multiplies in the stored-row kernel
(ops/quant_kernels.py: widened in registers, float32 accumulation, ~95 GFLOP/s), rounded to bfloat16 once
at the end as torch's is (RESULTS.md, #14, fifth session).

A packed float32 weight lies in blocks of 64 output columns, [ceil(out / 64)][in rounded up to 16][64], and on
AVX-512 CPUs our own kernel reads it in place (kvserve._core.cpu.blocked_matmul, csrc/cpu/blocked_matmul.cpp):
at a decode step's few rows oneDNN's ran at 151-177 GFLOP/s with the weights streamed from DRAM, ours at
171-197 (it prefetches the next block among its multiply-adds); at a prompt's thousands of rows both ran at
~200. The layout is oneDNN's choice, not a documented contract, so each weight is checked where it was
packed; one that does not match keeps oneDNN's kernel.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kvserve import _core
from kvserve.ops import quant_kernels

# oneDNN picks its blocking from an expected batch size; 1, 32, 256 and 2048 gave the same layout and speed.
_BATCH_HINT = 32


@functools.cache
def _packs(dtype: torch.dtype) -> bool:
    """oneDNN packs float32 on any x86 CPU; bfloat16 only where the CPU has its bfloat16 instructions
    (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): on an AVX2-only CPU it raises, and the weight stays dense."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype is torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype is torch.float32


def packable(weight: torch.Tensor) -> bool:
    """A dense [out, in] float weight on CPU that oneDNN can pack on this CPU."""
    return weight.device.type == "cpu" and weight.layout == torch.strided and weight.dim() == 2 and _packs(weight.dtype)


def pack(weight: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _BATCH_HINT)


def packed_parameter(weight: torch.Tensor) -> nn.Parameter:
    """The packed weight as a parameter; a float32 one found in the blocked layout carries `blocked` (its
    address, out and in features, and in features padded), which our kernel reads, else None."""
    dense = weight.contiguous()
    param = nn.Parameter(pack(dense), requires_grad=False)
    param.blocked = _blocked(dense, param)
    return param


# Output columns of a block, and what the input features are padded to.
_BLOCK, _K_ALIGN = 64, 16


def _blocked(dense: torch.Tensor, packed: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Where oneDNN left `dense` in the blocked layout: its size says so, and the first, a middle and the last
    block hold the weight's bits where the layout puts them (oneDNN chooses its blocking from the shape and the
    thread count: with 8 threads a 130 x 511 weight came out in narrower blocks)."""
    if dense.dtype is not torch.float32 or dense.dim() != 2 or not _core.cpu.blocked_matmul_fits():
        return None
    n, k = dense.shape
    k_padded, blocks = -(-k // _K_ALIGN) * _K_ALIGN, -(-n // _BLOCK)
    if torch.ops.mkldnn._nbytes(packed) != blocks * _BLOCK * k_padded * 4:
        return None
    address = torch.ops.mkldnn.data_ptr(packed)
    raw = np.ctypeslib.as_array((ctypes.c_uint32 * (blocks * k_padded * _BLOCK)).from_address(address))
    raw = raw.reshape(blocks, k_padded, _BLOCK)
    bits = dense.view(torch.int32).numpy().view(np.uint32)
    for block in sorted({0, blocks // 2, blocks - 1}):
        rows = bits[block * _BLOCK : (block + 1) * _BLOCK]
        if not np.array_equal(raw[block, :k, : rows.shape[0]], rows.T):
            return None
    return address, n, k, k_padded


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weightᵀ + bias for a dense or a packed weight."""
    if weight.is_mkldnn:
        blocked = getattr(weight, "blocked", None)
        if blocked is not None and x.dtype is torch.float32:
            return _blocked_linear(x, blocked, bias)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if weight.dtype is torch.bfloat16 and weight.device.type == "cpu" and not _packs(torch.bfloat16):
        return _bfloat16_rows_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def _blocked_linear(x: torch.Tensor, blocked: tuple[int, int, int, int], bias: torch.Tensor | None) -> torch.Tensor:
    address, n, k, k_padded = blocked
    rows = x.reshape(-1, k)
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    if bias is not None and (bias.dtype is not torch.float32 or not bias.is_contiguous()):
        bias = bias.float().contiguous()
    out = torch.empty(rows.shape[0], n)
    _core.cpu.blocked_matmul(
        out.data_ptr(), rows.data_ptr(), address, 0 if bias is None else bias.data_ptr(), rows.shape[0], n, k,
        k_padded, rows.stride(0), n, torch.get_num_threads(),
    )  # fmt: skip
    return out.view(*x.shape[:-1], n)


def _bfloat16_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = quant_kernels.gemv(x, quant_kernels.StoredWeight.from_half(weight))
    if bias is not None:
        out += bias
    return out.to(x.dtype).view(*x.shape[:-1], weight.shape[0])
