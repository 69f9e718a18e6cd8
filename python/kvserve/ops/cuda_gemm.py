"""The CUTLASS GEMMs and the quantization kernel (kvserve._kernels) behind the ops' signatures.

Each wrapper takes exactly the arguments of its reference op (`ops/gemm_reference.py`), checks that the inputs
fit a compiled kernel (types, 16-byte rows, a configuration for this device) and otherwise runs the reference.
The tile configuration comes from `gemm_dispatch` (the tuned table, else a default by M); `gemm_with_config`
and `scaled_mm_with_config` force one, for the tests and the tuning script.
"""

from __future__ import annotations

import functools

import torch

from kvserve import _kernels
from kvserve.ops import cuda_kernels, gemm_dispatch, gemm_reference

if not hasattr(_kernels, "gemm_configs"):
    raise ImportError("kvserve._kernels was built without the GEMMs (KVSERVE_CUDA_GEMM=OFF)")

OPERAND_CODES = {
    torch.float16: _kernels.OPERAND_FLOAT16,
    torch.bfloat16: _kernels.OPERAND_BFLOAT16,
    torch.float8_e4m3fn: _kernels.OPERAND_FLOAT8_E4M3,
    torch.int8: _kernels.OPERAND_INT8,
}
OUT_DTYPES = (torch.float16, torch.bfloat16)
QUANT_DTYPES = tuple(gemm_reference.QUANT_DTYPES)


@functools.cache
def device_sm(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


@functools.cache
def available_configs(operand: torch.dtype, out_dtype: torch.dtype, index: int) -> list[str]:
    """The configurations compiled for these types that run on CUDA device `index`."""
    return _kernels.gemm_configs(OPERAND_CODES[operand], cuda_kernels.DTYPE_CODES[out_dtype], device_sm(index))


def choose_config(operand: torch.dtype, out_dtype: torch.dtype, m: int, n: int, k: int, index: int) -> str | None:
    available = available_configs(operand, out_dtype, index)
    table = gemm_dispatch.device_table(torch.cuda.get_device_name(index))
    return gemm_dispatch.choose_config(
        table, gemm_dispatch.kind_key(operand, out_dtype), device_sm(index), m, n, k, available
    )


def _aligned(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or t.data_ptr() % 16 == 0 for t in tensors)


def _operands_fit(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> bool:
    """Kernels on; a [M, K] and b [N, K] of one operand type on the current device; rows of 16 bytes; bias
    [N] of the output dtype."""
    return (
        cuda_kernels.kernels_enabled()
        and a.dtype in OPERAND_CODES
        and b.dtype == a.dtype
        and out_dtype in OUT_DTYPES
        and a.dim() == 2
        and b.dim() == 2
        and a.shape[1] == b.shape[1]
        and a.device.index == torch.cuda.current_device()
        and b.device == a.device
        and (a.shape[1] * a.element_size()) % 16 == 0
        and b.shape[0] % 8 == 0
        and (bias is None or (bias.shape == (b.shape[0],) and bias.dtype == out_dtype and bias.device == a.device))
    )


def _contiguous_aligned(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    t = t.contiguous()
    return t if _aligned(t) else t.clone()


def gemm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return gemm_with_config(a, b, bias, None)


def gemm_with_config(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, config: str | None) -> torch.Tensor:
    """gemm with the named tile configuration, or the dispatch table's when config is None."""
    if not (_operands_fit(a, b, bias, a.dtype) and a.dtype in OUT_DTYPES):
        return gemm_reference.gemm(a, b, bias)
    (m, k), n = a.shape, b.shape[0]
    config = config or choose_config(a.dtype, a.dtype, m, n, k, a.device.index)
    if config is None:
        return gemm_reference.gemm(a, b, bias)
    a, b, bias = _contiguous_aligned(a), _contiguous_aligned(b), _contiguous_aligned(bias)
    out = cuda_kernels._new((m, n), a.dtype, a.device)
    _kernels.gemm(
        cuda_kernels.DTYPE_CODES[a.dtype], out.data_ptr(), a.data_ptr(), b.data_ptr(),
        0 if bias is None else bias.data_ptr(), m, n, k, config, cuda_kernels._stream(a),
    )  # fmt: skip
    return out


def scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    return scaled_mm_with_config(a, b, a_scale, b_scale, out_dtype, bias, None)


def scaled_mm_with_config(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None,
    config: str | None,
) -> torch.Tensor:
    """scaled_mm with the named tile configuration, or the dispatch table's when config is None."""
    (m, k), n = a.shape, b.shape[0]
    fits = (
        _operands_fit(a, b, bias, out_dtype)
        and a.dtype in QUANT_DTYPES
        and a_scale.dtype == b_scale.dtype == torch.float32
        and a_scale.numel() in (1, m)
        and b_scale.numel() in (1, n)
        and a_scale.device == b_scale.device == a.device
    )
    config = config or (choose_config(a.dtype, out_dtype, m, n, k, a.device.index) if fits else None)
    if not fits or config is None:
        return gemm_reference.scaled_mm(a, b, a_scale, b_scale, out_dtype, bias)
    a, b, bias = _contiguous_aligned(a), _contiguous_aligned(b), _contiguous_aligned(bias)
    # The kernels read one weight scale per output channel: a per-tensor one is broadcast (N floats).
    b_scale = _contiguous_aligned(b_scale.reshape(-1).expand(n))
    a_scale = a_scale.reshape(-1).contiguous()
    out = cuda_kernels._new((m, n), out_dtype, a.device)
    _kernels.scaled_mm(
        OPERAND_CODES[a.dtype], cuda_kernels.DTYPE_CODES[out_dtype], out.data_ptr(), a.data_ptr(), b.data_ptr(),
        a_scale.data_ptr(), b_scale.data_ptr(), 0 if bias is None else bias.data_ptr(), a_scale.numel() == m and m > 1,
        m, n, k, config, cuda_kernels._stream(a),
    )  # fmt: skip
    return out


def dynamic_quantize(x: torch.Tensor, quant_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fits = (
        cuda_kernels.kernels_enabled()
        and x.dtype in cuda_kernels.DTYPE_CODES
        and quant_dtype in QUANT_DTYPES
        and x.dim() == 2
        and x.shape[1] > 0
        and x.stride(1) == 1
        and (x.shape[0] <= 1 or x.stride(0) >= x.shape[1])
        and x.device.index == torch.cuda.current_device()
    )
    if not fits:
        return gemm_reference.dynamic_quantize(x, quant_dtype)
    rows, cols = x.shape
    out = cuda_kernels._new((rows, cols), quant_dtype, x.device)
    scales = cuda_kernels._new((rows,), torch.float32, x.device)
    _kernels.dynamic_quantize(
        OPERAND_CODES[quant_dtype], cuda_kernels.DTYPE_CODES[x.dtype], out.data_ptr(), scales.data_ptr(),
        x.data_ptr(), rows, cols, x.stride(0) if rows > 1 else cols, cuda_kernels._stream(x),
    )  # fmt: skip
    return out, scales


KERNELS = {"gemm": gemm, "scaled_mm": scaled_mm, "dynamic_quantize": dynamic_quantize}
