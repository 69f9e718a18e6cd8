"""Float weights on CPU pre-packed once, at load, into oneDNN's blocked layout.

F.linear on a plain float32 weight goes to MKL's sgemm, which re-packs the weight at every call: at decode
batch sizes on this project's CPUs that is 82-134 GFLOP/s against 143-201 for oneDNN on a weight packed
ahead of time, and a step of bench_throughput's float32 Llama took 20.6 ms against 12.1 (RESULTS.md, #14).
bfloat16 already runs in oneDNN; packing saves its per-call reorder. The packed tensor replaces the dense
one (same bytes), and each output row depends on its own input row only, whatever the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PACKED_DTYPES = (torch.float32, torch.bfloat16)
# oneDNN picks its blocking from an expected batch size; 1, 32, 256 and 2048 gave the same layout and speed.
_BATCH_HINT = 32


def packable(weight: torch.Tensor) -> bool:
    """A dense [out, in] float weight on CPU that oneDNN can pack."""
    return (
        weight.device.type == "cpu"
        and weight.layout == torch.strided
        and weight.dim() == 2
        and weight.dtype in _PACKED_DTYPES
        and torch.backends.mkldnn.is_available()
    )


def pack(weight: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _BATCH_HINT)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weightᵀ + bias for a dense or a packed weight."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
