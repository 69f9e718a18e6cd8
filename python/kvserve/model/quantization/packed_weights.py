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
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weightᵀ + bias for a dense or a packed weight."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if weight.dtype is torch.bfloat16 and weight.device.type == "cpu" and not _packs(torch.bfloat16):
        return _bfloat16_rows_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def _bfloat16_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = quant_kernels.gemv(x, quant_kernels.StoredWeight.from_half(weight))
    if bias is not None:
        out += bias
    return out.to(x.dtype).view(*x.shape[:-1], weight.shape[0])
