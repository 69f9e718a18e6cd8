"""End to end on the GPU: an fp8 checkpoint's greedy tokens with the CUTLASS scaled GEMMs (and the other CUDA
kernels) equal those of the same model through the torch reference ops.

bf16 activations (the scaled GEMMs write bf16 or fp16): both paths quantize the same activations per token
with bitwise-equal results (tests/kernels/test_gemm.py); they differ only in the order of float32 sums and in
bf16 roundings of the outputs, far below the logit gaps of a tiny model with initializer_range 0.2. head_dim 64
so attention runs its kernel; hidden sizes that are multiples of 16 bytes so every projection fits the GEMMs.
"""

from __future__ import annotations

import pytest

from kvserve import ops
from kvserve.config import EngineConfig
from tests.kernels.test_greedy_with_kernels import greedy_tokens
from tests.quantization import checkpoints
from tests.tiny_models import build_model

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize(("layout", "quantization"), [("ct-fp8-channel", None), ("fp8-static", None), (None, "fp8")])
def test_fp8_model_kernels_give_the_reference_tokens(tmp_path, tokenizer_dir, layout, quantization):
    from tests.engine.test_greedy_exact import random_prompts
    from tests.engine_helpers import MiB

    model_dir = build_model(
        "llama", tmp_path / "llama-d64", tokenizer_dir, hidden_size=256, intermediate_size=512,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    if layout is not None:
        model_dir = checkpoints.quantize_checkpoint(model_dir, tmp_path / layout, layout)
    prompts = random_prompts(6, 1, 200, seed=11)
    config = EngineConfig(
        model=str(model_dir), device="cuda", dtype="bfloat16", kv_cache_memory=64 * MiB, max_num_batched_tokens=64,
        quantization=quantization,
    )  # fmt: skip
    with_kernels = greedy_tokens(config, prompts, max_tokens=24)
    with ops.reference_only():
        with_reference = greedy_tokens(config, prompts, max_tokens=24)
    assert with_kernels == with_reference
