"""Fixtures of the CUDA kernel tests: every output the kernels allocate is poisoned, and a silent fallback
to the torch reference fails the test instead of passing it vacuously."""

from __future__ import annotations

import pytest
import torch


class _NoFallback:
    def __getattr__(self, name: str):
        raise AssertionError(f"the CUDA wrapper fell back to reference.{name}: the kernel did not run")


def _poisoned(shape, dtype, device):
    """NaN in float outputs (fp8 e4m3 has one too); 0xFF bytes in the attention workspace (an all-ones float32
    is a NaN too); -128 in int8 outputs, a value symmetric quantization never writes."""
    if dtype == torch.uint8:
        return torch.full(shape, 255, dtype=dtype, device=device)
    if dtype == torch.int8:
        return torch.full(shape, -128, dtype=dtype, device=device)
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch):
    """The ops with poisoned outputs and no reference fallback. Compute oracles before calling them."""
    from kvserve import ops
    from kvserve.ops import cuda_gemm, cuda_kernels

    monkeypatch.setattr(cuda_kernels, "_new", _poisoned)
    monkeypatch.setattr(cuda_kernels, "reference", _NoFallback())
    monkeypatch.setattr(cuda_gemm, "gemm_reference", _NoFallback())
    return ops


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
