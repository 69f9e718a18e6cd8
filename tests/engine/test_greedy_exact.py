"""Greedy outputs of the whole engine must be token-exact against transformers' generate.

Covers each architecture alone, then on the Llama model: many concurrent requests of different lengths,
chunked prefill forced by a small token budget, prefix-cache hits, and preemption forced by a tiny KV pool.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from kvserve.config import EngineConfig
from kvserve.model.micro_batches import MICRO_BATCH_TOKENS
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, generate, hf_greedy, run_with_engine
from tests.tiny_models import ARCHITECTURES, VOCAB_SIZE

GREEDY = dict(temperature=0.0, ignore_eos=True)


def random_prompts(count: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, VOCAB_SIZE) for _ in range(rng.randint(min_len, max_len))] for _ in range(count)]


def run_concurrently(config: EngineConfig, prompts: list[list[int]], max_tokens: int, stats: list | None = None):
    """Greedy outputs of every prompt at once; each step's StepStats appended to `stats` when given."""

    async def body(engine):
        if stats is not None:
            engine.add_stats_listener(stats.append)
        params = SamplingParams(max_tokens=max_tokens, **GREEDY)
        results = await asyncio.gather(*(generate(engine, p, params, f"r{i}") for i, p in enumerate(prompts)))
        return results, engine

    return run_with_engine(config, body)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_single_request_matches_transformers(tiny_model_dir, arch):
    model_dir = tiny_model_dir(arch)
    prompt = random_prompts(1, 30, 30, seed=1)[0]
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=8)
    [(tokens, _, final)], _ = run_concurrently(config, [prompt], max_tokens=40)
    assert tokens == hf_greedy(model_dir, prompt, 40)
    assert (final.finish_reason, final.num_output_tokens, final.num_prompt_tokens) == ("length", 40, 30)


def test_concurrent_requests_of_different_lengths(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    prompts = random_prompts(10, 1, 60, seed=2)
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=4)
    results, _ = run_concurrently(config, prompts, max_tokens=24)
    for prompt, (tokens, _, _) in zip(prompts, results):
        assert tokens == hf_greedy(model_dir, prompt, 24)


def test_chunked_prefill_under_a_small_token_budget(tiny_model_dir):
    model_dir = tiny_model_dir("qwen3")
    prompts = random_prompts(6, 40, 100, seed=3)
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=4, max_num_batched_tokens=16)
    results, _ = run_concurrently(config, prompts, max_tokens=16)
    for prompt, (tokens, _, _) in zip(prompts, results):
        assert tokens == hf_greedy(model_dir, prompt, 16)


def test_a_step_over_the_micro_batch_runs_in_pieces(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    prompts = random_prompts(4, 200, 300, seed=7)  # one step of ~1,000 prompt tokens: pieces cut prompts
    stats = []
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=16)
    results, _ = run_concurrently(config, prompts, max_tokens=6, stats=stats)
    assert max(s.num_scheduled_tokens for s in stats) > MICRO_BATCH_TOKENS
    for prompt, (tokens, _, _) in zip(prompts, results):
        assert tokens == hf_greedy(model_dir, prompt, 6)


def test_sliding_window_beyond_the_window(tiny_model_dir):
    model_dir = tiny_model_dir("mistral-sliding")  # window of 24 tokens; sequences reach 80
    prompts = random_prompts(3, 30, 50, seed=4)
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=4, max_num_batched_tokens=12)
    results, _ = run_concurrently(config, prompts, max_tokens=30)
    for prompt, (tokens, _, _) in zip(prompts, results):
        assert tokens == hf_greedy(model_dir, prompt, 30)


def test_prefix_cache_hits_give_the_same_tokens(tiny_model_dir):
    model_dir = tiny_model_dir("qwen2")
    shared = random_prompts(1, 48, 48, seed=5)[0]
    suffixes = random_prompts(4, 1, 12, seed=6)
    config = EngineConfig(model=str(model_dir), kv_cache_memory=8 * MiB, block_size=8)

    async def body(engine):
        params = SamplingParams(max_tokens=12, **GREEDY)
        first = await generate(engine, shared + suffixes[0], params, "first")
        rest = await asyncio.gather(
            *(generate(engine, shared + s, params, f"r{i}") for i, s in enumerate(suffixes[1:]))
        )
        return [first, *rest]

    results = run_with_engine(config, body)
    assert results[0][2].num_cached_tokens == 0
    for suffix, (tokens, _, _) in zip(suffixes, results):
        assert tokens == hf_greedy(model_dir, shared + suffix, 12)
    assert all(final.num_cached_tokens == 48 for _, _, final in results[1:])


def test_preemption_under_a_tiny_kv_pool(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    prompts = random_prompts(6, 20, 40, seed=7)
    # 2 layers x 2 (K, V) x 4 tokens x 2 heads x 16 dims x 4 bytes = 2 KiB per block: 24 blocks = 96 tokens,
    # far less than six requests of up to 70 tokens need at once.
    config = EngineConfig(model=str(model_dir), kv_cache_memory=48 * 1024, block_size=4, max_model_len=96)
    stats = []
    results, engine = run_concurrently(config, prompts, max_tokens=30, stats=stats)
    assert sum(s.num_preemptions for s in stats) > 0
    for prompt, (tokens, _, _) in zip(prompts, results):
        assert tokens == hf_greedy(model_dir, prompt, 30)
    assert engine.scheduler.core.block_pool.num_free_blocks == engine.scheduler.core.block_pool.num_blocks
