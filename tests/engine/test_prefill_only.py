"""Prefill-only requests through the whole engine: pooled rows against transformers on the same weights,
mixed with generation in one batch, blocks freed after."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.errors import InvalidRequestError
from kvserve.request import EngineRequest, PoolingParams
from kvserve.sampling_params import SamplingParams
from tests.engine.test_greedy_exact import random_prompts
from tests.engine_helpers import MiB, _hf_model, generate, hf_greedy, run_with_engine

# float32 end to end; the two implementations sum in different orders, so allow a few ulps of the
# hidden states' magnitude (O(1) after the final RMSNorm) and of log-probabilities (O(10)).
ATOL = 1e-4


@pytest.fixture
def model_dir(tiny_model_dir):
    return tiny_model_dir("llama")


@pytest.fixture
def config(model_dir) -> EngineConfig:
    return EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, block_size=4)


def hf_final_hidden(model_dir, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = _hf_model(model_dir)(torch.tensor([prompt]), output_hidden_states=True)
    return out.hidden_states[-1][0], out.logits[0, -1]


def test_embeddings_and_next_token_distributions_match_transformers(config, model_dir):
    prompts = random_prompts(4, 5, 30, seed=11)
    labels = (7, 11, 42)

    async def body(engine):
        embed = [
            engine.encode(EngineRequest(f"e{i}", p, pooling=PoolingParams(kind="embed"))) for i, p in enumerate(prompts)
        ]
        mean = engine.encode(EngineRequest("m", prompts[0], pooling=PoolingParams(pooling="mean", normalize=False)))
        scores = engine.encode(
            EngineRequest("s", prompts[1], pooling=PoolingParams(kind="next_token", token_ids=labels))
        )
        return await asyncio.gather(*embed, mean, scores)

    *embeddings, mean, scores = run_with_engine(config, body)
    for prompt, output in zip(prompts, embeddings):
        hidden, _ = hf_final_hidden(model_dir, prompt)
        expected = torch.nn.functional.normalize(hidden[-1], dim=0).numpy()
        assert output.finished and output.finish_reason == "stop" and output.token_ids == []
        np.testing.assert_allclose(output.pooled, expected, atol=ATOL)
        assert output.num_prompt_tokens == len(prompt)
    hidden, _ = hf_final_hidden(model_dir, prompts[0])
    np.testing.assert_allclose(mean.pooled, hidden.mean(dim=0).numpy(), atol=ATOL)
    _, logits = hf_final_hidden(model_dir, prompts[1])
    expected = torch.log_softmax(logits, dim=-1)[list(labels)].numpy()
    np.testing.assert_allclose(scores.pooled, expected, atol=ATOL)
    assert scores.times.first_scheduled <= scores.times.first_token == scores.times.latest_token


def test_pooling_and_generation_share_steps(config, model_dir):
    prompts = random_prompts(6, 10, 40, seed=12)
    stats = []

    async def body(engine):
        engine.add_stats_listener(stats.append)
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        generations = [generate(engine, p, params, f"g{i}") for i, p in enumerate(prompts[:3])]
        pooled = [engine.encode(EngineRequest(f"p{i}", p, pooling=PoolingParams())) for i, p in enumerate(prompts[3:])]
        results = await asyncio.gather(*generations, *pooled)
        await asyncio.sleep(0.05)
        pool = engine.scheduler.core.block_pool
        return results, pool.num_free_blocks, pool.num_blocks

    results, free, total = run_with_engine(config, body)
    for prompt, (tokens, _, _) in zip(prompts[:3], results[:3]):
        assert tokens == hf_greedy(model_dir, prompt, 12)
    assert all(r.pooled is not None for r in results[3:])
    assert free == total
    assert sum(s.num_pooled for s in stats) == 3
    assert sum(s.num_finished for s in stats) == 6
    assert sum(s.num_generated_tokens for s in stats) == 36


def test_bad_pooling_requests_are_400s_and_the_engine_keeps_serving(config):
    async def body(engine):
        with pytest.raises(InvalidRequestError, match="exceeds the model's hidden size"):
            await engine.encode(EngineRequest("big", [1, 2], pooling=PoolingParams(dimensions=10**6)))
        with pytest.raises(InvalidRequestError, match="token_ids"):
            await engine.encode(
                EngineRequest("oov", [1, 2], pooling=PoolingParams(kind="next_token", token_ids=(10**6,)))
            )
        with pytest.raises(InvalidRequestError, match="context length"):
            await engine.encode(EngineRequest("long", [5] * 5000, pooling=PoolingParams()))
        output = await engine.encode(EngineRequest("fine", [1, 2, 3], pooling=PoolingParams()))
        assert output.pooled is not None and engine.is_healthy

    run_with_engine(config, body)
