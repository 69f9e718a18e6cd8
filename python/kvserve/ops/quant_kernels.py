"""Matmuls and embedding lookups over weights kept in their stored format (kvserve._core.cpu).

A `StoredWeight` is a uint8 matrix whose row j holds output row j of W in a GGUF block format (Q4_0, Q4_1,
Q8_0, Q4_K, Q5_K, Q6_K) or as plain f32 / f16 / bf16 values; activations and accumulation are float32.
Every batch size runs the C++ kernel, which dequantizes W in registers into tiles of several activation rows
by several weight rows; it beats dequantizing W to float32 and torch's sgemm (`dequantize_matmul`, kept as
the comparison) from one row to prefill-sized batches (benchmarks/bench_cpu_matmul.py, RESULTS.md #14).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve import _core

_kernels = _core.cpu

# GGML type ids (gguf.GGMLQuantizationType) with a kernel; any other type is dequantized at load to F32.
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 8, 12, 13, 14, 30
FORMATS_WITH_KERNEL = frozenset({F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16})
_HALF_FORMATS = {torch.float16: F16, torch.bfloat16: BF16, torch.float32: F32}

# Float32 values dequantized per panel of the prefill path: 1 MiB, well inside L2 with the activations.
_PANEL_VALUES = 1 << 18


def row_bytes(fmt: int, in_features: int) -> int:
    """Bytes of one stored row of `in_features` values; ValueError when the format has no kernel or the
    row is not a whole number of its blocks."""
    return _kernels.weight_row_bytes(fmt, in_features)


@dataclass(frozen=True, slots=True)
class StoredWeight:
    """Rows [row0, row0 + out_features) of a uint8 matrix `data` (row stride data.shape[1]) in format `fmt`."""

    data: torch.Tensor  # uint8 [rows, row_stride], contiguous
    fmt: int
    out_features: int
    in_features: int
    row0: int = 0

    @classmethod
    def from_half(cls, weight: torch.Tensor) -> StoredWeight:
        """A float32 / f16 / bf16 [out, in] weight as stored rows (a view: no copy when contiguous)."""
        weight = weight.contiguous()
        return cls(weight.view(torch.uint8), _HALF_FORMATS[weight.dtype], *weight.shape)

    def _pointer(self) -> int:
        return self.data.data_ptr() + self.row0 * self.data.stride(0)


def _rows(x: torch.Tensor, in_features: int) -> torch.Tensor:
    rows = x.reshape(-1, in_features)
    if rows.dtype != torch.float32:
        rows = rows.float()
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def gemv_into(out: torch.Tensor, x: torch.Tensor, weight: StoredWeight) -> None:
    """out[:, :] = x · Wᵀ by the C++ kernel; out: a float32 [M, N] view whose rows are contiguous."""
    _kernels.quant_matmul(
        out.data_ptr(), x.data_ptr(), weight._pointer(), weight.fmt, x.shape[0], weight.out_features,
        weight.in_features, weight.data.stride(0), x.stride(0), out.stride(0), torch.get_num_threads(),
    )  # fmt: skip


def dequantize(weight: StoredWeight, row_begin: int = 0, row_end: int | None = None) -> torch.Tensor:
    """Rows [row_begin, row_end) of W as float32."""
    row_end = weight.out_features if row_end is None else row_end
    out = torch.empty(row_end - row_begin, weight.in_features)
    pointer = weight._pointer() + row_begin * weight.data.stride(0)
    _kernels.dequantize_weight_rows(
        out.data_ptr(), pointer, weight.fmt, row_end - row_begin, weight.in_features, weight.data.stride(0),
        torch.get_num_threads(),
    )  # fmt: skip
    return out


def dequantize_matmul_into(out: torch.Tensor, x: torch.Tensor, weight: StoredWeight) -> None:
    """out = x · Wᵀ with W dequantized a panel of rows at a time and torch's sgemm."""
    panel = max(1, _PANEL_VALUES // weight.in_features)
    for begin in range(0, weight.out_features, panel):
        end = min(begin + panel, weight.out_features)
        out[:, begin:end] = torch.mm(x, dequantize(weight, begin, end).t())


def matmul_into(out: torch.Tensor, x: torch.Tensor, weight: StoredWeight) -> None:
    """out = x · Wᵀ (the C++ kernel at every batch size: see the module's docstring)."""
    gemv_into(out, x, weight)


def gemv(x: torch.Tensor, weight: StoredWeight) -> torch.Tensor:
    rows = _rows(x, weight.in_features)
    out = torch.empty(rows.shape[0], weight.out_features)
    gemv_into(out, rows, weight)
    return out


def dequantize_matmul(x: torch.Tensor, weight: StoredWeight) -> torch.Tensor:
    rows = _rows(x, weight.in_features)
    out = torch.empty(rows.shape[0], weight.out_features)
    dequantize_matmul_into(out, rows, weight)
    return out


def matmul(x: torch.Tensor, weight: StoredWeight) -> torch.Tensor:
    """x [..., in] · Wᵀ -> float32 [..., out]."""
    rows = _rows(x, weight.in_features)
    out = torch.empty(rows.shape[0], weight.out_features)
    matmul_into(out, rows, weight)
    return out.view(*x.shape[:-1], weight.out_features)


def embedding(ids: torch.Tensor, weight: StoredWeight) -> torch.Tensor:
    """The float32 rows of W at `ids` (any shape): an embedding lookup from a stored table."""
    flat = ids.reshape(-1).to(torch.int64).contiguous()
    # numpy's min and max: torch's on a one-element tensor cost ~0.3 ms in the runner between steps (RESULTS.md)
    values = flat.numpy()
    if values.size and (values.min() < 0 or values.max() >= weight.out_features):
        raise IndexError(f"token id out of range [0, {weight.out_features})")
    out = torch.empty(flat.numel(), weight.in_features)
    _kernels.dequantize_gathered_rows(
        out.data_ptr(), weight._pointer(), weight.fmt, flat.data_ptr(), flat.numel(), weight.in_features,
        weight.data.stride(0),
    )  # fmt: skip
    return out.view(*ids.shape, weight.in_features)
