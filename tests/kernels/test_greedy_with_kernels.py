"""End to end on the GPU: the engine's greedy tokens with the CUDA kernels equal those with the reference ops.

A tiny random Llama with head_dim 64 (so attention runs the kernel, not the reference fallback), float32 (the
kernels' float32 results differ from the reference's by reduction order only, far below the logit gaps of a
model with initializer_range 0.2), and a small token budget so chunked prefills share steps with decodes.
"""

from __future__ import annotations

import asyncio

import pytest

from kvserve import ops
from kvserve.config import EngineConfig
from kvserve.sampling_params import SamplingParams
from tests.tiny_models import build_model

pytestmark = pytest.mark.cuda


def greedy_tokens(config: EngineConfig, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    # Imported here: the engine pulls in the runner, which only this GPU-only test needs.
    from tests.engine_helpers import generate, run_with_engine

    async def body(engine):
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return await asyncio.gather(*(generate(engine, p, params, f"r{i}") for i, p in enumerate(prompts)))

    return [tokens for tokens, _, _ in run_with_engine(config, body)]


@pytest.mark.parametrize("block_size", [16, 32])
def test_kernels_give_the_reference_tokens(tmp_path, tokenizer_dir, block_size):
    from tests.engine.test_greedy_exact import random_prompts
    from tests.engine_helpers import MiB

    model_dir = build_model(
        "llama", tmp_path / "llama-d64", tokenizer_dir, hidden_size=256, intermediate_size=512,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    prompts = random_prompts(8, 1, 300, seed=7)
    config = EngineConfig(
        model=str(model_dir), device="cuda", dtype="float32", kv_cache_memory=64 * MiB, block_size=block_size,
        max_num_batched_tokens=64,
    )  # fmt: skip
    with_kernels = greedy_tokens(config, prompts, max_tokens=40)
    with ops.reference_only():
        with_reference = greedy_tokens(config, prompts, max_tokens=40)
    assert with_kernels == with_reference
