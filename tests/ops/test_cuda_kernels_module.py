"""What can be checked of the CUDA kernels without a GPU: the module is built where nvcc was found, imports
(static cudart), registers a CUDA kernel for every op with the reference's exact signature, and its launchers
reject bad sizes with ValueError before touching the device. The kernels' results are checked on a GPU in
tests/kernels (marked cuda)."""

from __future__ import annotations

import inspect
import shutil

import pytest
import torch

from kvserve import ops
from kvserve.ops import gemm_reference, reference

needs_kernels = pytest.mark.skipif(not ops.HAS_CUDA_KERNELS, reason="kvserve._kernels was not built (no nvcc)")


def test_kernels_are_built_where_nvcc_is():
    # CMake's check_language(CUDA) finds nvcc on PATH (or CUDACXX); the build then must produce the module.
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH")
    assert ops.HAS_CUDA_KERNELS


@needs_kernels
def test_every_op_has_a_cuda_kernel_with_the_reference_signature():
    # A build without the GEMMs (KVSERVE_CUDA_GEMM=OFF, as `make install` configures it) has the other kernels.
    expected = set(ops.CUSTOM_OPS) - (set() if ops.HAS_GEMM_KERNELS else {"gemm", "scaled_mm", "dynamic_quantize"})
    assert set(ops.CUDA_KERNELS) == expected
    for name, kernel in ops.CUDA_KERNELS.items():
        oracle = getattr(reference, name, None) or getattr(gemm_reference, name)
        assert inspect.signature(kernel) == inspect.signature(oracle), name


@needs_kernels
def test_module_exposes_the_launchers():
    from kvserve import _kernels

    names = {"reshape_and_cache", "rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary_embedding",
             "paged_attention", "paged_attention_workspace_bytes"}  # fmt: skip
    assert names <= set(dir(_kernels))
    assert (_kernels.FLOAT32, _kernels.FLOAT16, _kernels.BFLOAT16) == (0, 1, 2)


@needs_kernels
def test_launchers_reject_bad_sizes_before_launching():
    from kvserve import _kernels

    with pytest.raises(ValueError, match="hidden"):
        _kernels.rms_norm(2, 0, 0, 0, rows=4, hidden=0, x_stride=0, eps=1e-6, stream=0)
    with pytest.raises(ValueError, match="x_stride"):
        _kernels.rms_norm(2, 0, 0, 0, rows=4, hidden=64, x_stride=32, eps=1e-6, stream=0)
    with pytest.raises(ValueError, match="dtype"):
        _kernels.silu_and_mul(7, 0, 0, rows=1, d=8, stream=0)
    with pytest.raises(ValueError, match="rot_dim"):
        _kernels.rotary_embedding(0, 0, 0, 0, 0, 1, 1, 64, 65, 64, 64, 64, 64, True, 0)
    with pytest.raises(ValueError, match="token strides"):
        _kernels.reshape_and_cache(0, 0, 0, 0, 0, tokens=1, num_slots=16, row=128, key_stride=64, value_stride=128,
                                   stream=0)  # fmt: skip
    with pytest.raises(ValueError, match="head_dim"):
        _kernels.paged_attention_workspace_bytes(1, 1, 4, 2, 96, 1, 10)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        _kernels.paged_attention_workspace_bytes(1, 1, 6, 4, 64, 1, 10)
    with pytest.raises(ValueError, match="max_query_len"):
        _kernels.paged_attention_workspace_bytes(8, 1, 4, 2, 64, 8, 4)


@needs_kernels
def test_attention_workspace_grows_with_the_context():
    from kvserve import _kernels

    # One split (short contexts) needs only the tile offsets; long contexts need room for the partial results.
    short = _kernels.paged_attention_workspace_bytes(64, 64, 32, 8, 128, 1, 100)
    long = _kernels.paged_attention_workspace_bytes(64, 64, 32, 8, 128, 1, 4096)
    assert 0 < short < long
    # float32 partials: at least one (m, l, D values) triple per request, KV head, query head of the group.
    assert long >= 64 * 8 * 4 * (2 + 128) * 4


@needs_kernels
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_a_launch_without_a_gpu_raises_instead_of_crashing():
    from kvserve import _kernels

    with pytest.raises(RuntimeError, match="CUDA"):
        _kernels.silu_and_mul(_kernels.FLOAT32, 0, 0, rows=1, d=8, stream=0)
