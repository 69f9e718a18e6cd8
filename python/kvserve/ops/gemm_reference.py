"""Pure-torch matrix products for linear layers: the CPU path and the oracle for the CUTLASS GEMMs.

All products are `a @ b.T` with `b` a weight in torch's [out_features, in_features] layout: a [M, K],
b [N, K], out [M, N]. The 8-bit products dequantize both operands and multiply in float32, so they define the
result the kernels approximate; activations are quantized per token (one scale per row of `a`).
"""

from __future__ import annotations

import torch

# The 8-bit operand types and the largest magnitude each represents (fp8 e4m3 "fn": no infinities, 448).
QUANT_DTYPES: dict[torch.dtype, float] = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}


def gemm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a [M, K], b [N, K], bias [N] or None, one dtype; float32 products, one rounding to a's dtype."""
    out = a.float() @ b.float().T
    if bias is not None:
        out += bias.float()
    return out.to(a.dtype)


def scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """a [M, K] and b [N, K] in fp8 e4m3 or int8; a_scale float32 [M] (per token) or [1]; b_scale float32 [N]
    (per output channel) or [1]; bias [N] or None. Returns a_scale * (b_scale * (a @ b.T)) + bias in out_dtype,
    computed in float32 (the kernels' order of operations) and rounded once."""
    acc = a.float() @ b.float().T
    out = a_scale.float().view(-1, 1) * (b_scale.float().view(1, -1) * acc)
    if bias is not None:
        out += bias.float()
    return out.to(out_dtype)


def dynamic_quantize(x: torch.Tensor, quant_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q [M, K] in quant_dtype, scales float32 [M]): symmetric per row, scale = absmax / the
    type's max (1 for an all-zero row), q = x / scale rounded to nearest even and saturated."""
    if quant_dtype not in QUANT_DTYPES:
        raise ValueError(f"cannot quantize to {quant_dtype}; choose one of {sorted(map(str, QUANT_DTYPES))}")
    qmax = QUANT_DTYPES[quant_dtype]
    x32 = x.float()
    absmax = x32.abs().amax(dim=-1)
    scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    scaled = x32 / scales.unsqueeze(-1)
    if quant_dtype == torch.int8:
        scaled = scaled.round()
    q = scaled.clamp(-qmax, qmax).to(quant_dtype)
    return q, scales


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """q [N, K] with per-row scales [N] (or one [1]) back to float32."""
    return q.float() * scales.float().view(-1, 1)
