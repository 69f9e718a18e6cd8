"""Float weights packed for oneDNN on CPU (model/quantization/packed_weights.py) against float64 math and
against F.linear, and where a loaded model (decoder or BERT encoder) packs them.

The error bound is the standard one for a dot product summed in any order in a type of unit roundoff u:
|ŷ - y| ≤ γ_K Σ|x_k w_k|, γ_K = K·u / (1 - K·u); a bfloat16 output adds its own rounding (half an ulp).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kvserve import _core
from kvserve.model.loader import build_model, model_weights
from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import Linear, packed_weights
from tests.pooling import encoder_models
from tests.torch_threads import torch_threads

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


BF16_PACKS = torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _packed(weight: torch.Tensor) -> torch.Tensor:
    """The weight packed as a model's parameter (a float32 one multiplied by our blocked-layout kernel where
    oneDNN left it in that layout), or kept dense where oneDNN cannot pack its type on this CPU (bfloat16
    without AVX-512 or AVX-NE-CONVERT), which packable must then say."""
    if weight.dtype is torch.bfloat16 and not BF16_PACKS:
        assert not packed_weights.packable(weight)
        return weight
    packed = packed_weights.packed_parameter(weight)
    assert packed.is_mkldnn and packed.shape == weight.shape and packed.dtype == weight.dtype
    return packed


def _check_against_float64(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor):
    x64, w64 = x.double(), weight.double()
    exact = F.linear(x64, w64, None if bias is None else bias.double())
    k = x.shape[-1]
    accumulate = 2.0**-24  # oneDNN and MKL accumulate in float32 for both types
    gamma = k * accumulate / (1 - k * accumulate)
    magnitude = F.linear(x64.abs(), w64.abs()) + (0 if bias is None else bias.double().abs())
    bound = gamma * magnitude + UNIT_ROUNDOFF[out.dtype] * exact.abs()
    assert ((out.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, k, n", [(1, 64, 48), (3, 511, 130), (32, 512, 1344), (67, 96, 8192)])
def test_packed_linear_within_the_rounding_bound(dtype: torch.dtype, rows: int, k: int, n: int) -> None:
    generator = torch.Generator().manual_seed(rows * k + n)
    weight = torch.randn(n, k, generator=generator).to(dtype)
    bias = torch.randn(n, generator=generator).to(dtype)
    x = torch.randn(rows, k, generator=generator).to(dtype)
    packed = _packed(weight)
    _check_against_float64(x, weight, bias, packed_weights.linear(x, packed, bias))
    _check_against_float64(x, weight, None, packed_weights.linear(x, packed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_comes_out_the_same_in_any_batch(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    packed = _packed(torch.randn(1344, 512, generator=generator).to(dtype))
    x = torch.randn(67, 512, generator=generator).to(dtype)
    whole = packed_weights.linear(x, packed)
    for rows in (1, 3, 32, 64):
        assert torch.equal(packed_weights.linear(x[:rows], packed), whole[:rows])
    assert torch.equal(packed_weights.linear(x[5:6], packed), whole[5:6])


@pytest.mark.skipif(not _core.cpu.blocked_matmul_fits(), reason="needs AVX-512")
def test_float32_weights_packed_by_one_or_two_threads_take_the_blocked_kernel() -> None:
    """oneDNN's blocking depends on the shape and the thread count; with one or two threads (this project's CI
    and default host) a decoder's shapes come out in blocks of 64 columns, which our kernel reads, and its
    products agree with oneDNN's own within the bound."""
    generator = torch.Generator().manual_seed(3)
    for threads in (1, 2):
        with torch_threads(threads):
            for n, k in ((1344, 512), (130, 37), (8192, 96)):
                weight = torch.randn(n, k, generator=generator)
                packed = packed_weights.packed_parameter(weight)
                assert packed.blocked is not None and packed.blocked[1:] == (n, k, -(-k // 16) * 16)
                x = torch.randn(33, k, generator=generator)
                _check_against_float64(x, weight, None, packed_weights.linear(x, packed))
                onednn = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
                _check_against_float64(x, weight, None, onednn)


def test_without_avx512_float32_weights_keep_onednn() -> None:
    """The blocked kernel is AVX-512 only (its AVX2 build ran at half oneDNN's rate): capped at AVX2, a packed
    float32 weight carries no blocked layout and multiplies in oneDNN, within the bound."""
    code = (
        "import torch, torch.nn.functional as F\n"
        "from kvserve.model.quantization import packed_weights\n"
        "w, x = torch.randn(192, 64), torch.randn(5, 64)\n"
        "p = packed_weights.packed_parameter(w)\n"
        "assert p.blocked is None, p.blocked\n"
        "assert torch.allclose(packed_weights.linear(x, p), F.linear(x, w), atol=1e-4)\n"
    )
    env = {**os.environ, "KVSERVE_CPU_ISA": "avx2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_weight_not_where_the_layout_puts_it_keeps_onednn() -> None:
    """The layout is checked against the weight's own bits: packed values that are not the given weight's (as a
    different blocking would leave them) turn the blocked kernel off, and the product stays oneDNN's."""
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(192, 64, generator=generator)
    packed = packed_weights.pack(weight)
    assert packed_weights._blocked(weight.flip(0).contiguous(), packed) is None
    assert packed_weights._blocked(torch.randn(192, 64, generator=generator), packed) is None
    param = torch.nn.Parameter(packed, requires_grad=False)
    param.blocked = None
    x = torch.randn(5, 64, generator=generator)
    _check_against_float64(x, weight, None, packed_weights.linear(x, param))


def test_leading_dimensions_strides_and_empty_batches() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(40, 32, generator=generator)
    packed = packed_weights.packed_parameter(weight)
    x = torch.randn(2, 5, 32, generator=generator)
    assert packed_weights.linear(x, packed).shape == (2, 5, 40)
    strided = torch.randn(7, 64, generator=generator)[:, ::2]
    assert torch.allclose(packed_weights.linear(strided, packed), F.linear(strided, weight), atol=1e-5)
    assert packed_weights.linear(torch.empty(0, 32), packed).shape == (0, 40)


def test_bfloat16_leading_dimensions_strides_bias_and_empty_batches() -> None:
    """Packed by oneDNN or (without bfloat16 instructions) multiplied by the stored-row kernel: same shapes and
    the same rounding bound either way."""
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(40, 64, generator=generator).bfloat16()
    bias = torch.randn(40, generator=generator).bfloat16()
    packed = _packed(weight)
    x = torch.randn(2, 5, 64, generator=generator).bfloat16()
    out = packed_weights.linear(x, packed, bias)
    assert out.shape == (2, 5, 40) and out.dtype == torch.bfloat16
    _check_against_float64(x.view(10, 64), weight, bias, out.view(10, 40))
    strided = torch.randn(7, 128, generator=generator).bfloat16()[:, ::2]
    _check_against_float64(strided, weight, None, packed_weights.linear(strided, packed))
    assert packed_weights.linear(torch.empty(0, 64, dtype=torch.bfloat16), packed).shape == (0, 40)


def test_what_is_packable() -> None:
    assert packed_weights.packable(torch.zeros(4, 8))
    assert packed_weights.packable(torch.zeros(4, 8, dtype=torch.bfloat16)) == BF16_PACKS
    assert not packed_weights.packable(torch.zeros(4, 8, dtype=torch.float16))  # no fast oneDNN path here
    assert not packed_weights.packable(torch.zeros(4, 8, dtype=torch.uint8))  # stored GGUF rows
    assert not packed_weights.packable(torch.zeros(8))
    assert not packed_weights.packable(packed_weights.pack(torch.zeros(4, 8)))
    dense = torch.randn(4, 8)
    assert torch.equal(packed_weights.linear(torch.ones(1, 8), dense), F.linear(torch.ones(1, 8), dense))


def _load(directory) -> torch.nn.Module:
    config = ModelConfig.from_directory(directory)
    cpu = torch.device("cpu")
    return build_model(config, model_weights(directory, config, cpu), torch.float32, cpu)


@pytest.mark.parametrize("name, own_head", [("llama", True), ("qwen2", False)])
def test_a_loaded_model_packs_its_projections_and_an_own_lm_head(tiny_model_dir, name: str, own_head: bool):
    model = _load(tiny_model_dir(name))
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert linears and all(m.weight.is_mkldnn for m in linears)
    assert not model.embed_tokens.weight.is_mkldnn  # looked up by id: stays dense
    if own_head:
        assert model.lm_head.weight.is_mkldnn
    hidden = torch.randn(3, model.config.hidden_size)
    dense_head = model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight.to_dense()
    assert torch.allclose(model.compute_logits(hidden), F.linear(hidden, dense_head), atol=1e-4)


def test_a_loaded_bert_packs_its_projections():
    model = _load(encoder_models.minilm_dir())
    layers = [m for m in model.modules() if hasattr(m, "qkv_proj")]
    assert layers
    for layer in layers:
        assert all(getattr(layer, name).is_mkldnn for name in ("qkv_proj", "o_proj", "up_proj", "down_proj"))
