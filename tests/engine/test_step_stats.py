"""Step stats and request timestamps: exact counts after a known workload, ordered times, and task kinds
the model cannot serve refused per request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kvserve.config import EngineConfig
from kvserve.errors import InvalidRequestError
from kvserve.messages import StepStats
from kvserve.request import EncoderInput, EngineRequest
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, generate, run_with_engine

NUM_REQUESTS = 6
PROMPT_LEN = 10
MAX_TOKENS = 10


@pytest.fixture
def config(tiny_model_dir) -> EngineConfig:
    return EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=4 * MiB, block_size=16)


def test_stats_count_a_known_workload_exactly(config):
    stats: list[StepStats] = []

    async def body(engine):
        engine.add_stats_listener(stats.append)
        params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
        # Distinct first tokens: no prompt shares a block with another, so nothing hits the prefix cache.
        prompts = [[100 + i] + list(range(20, 20 + PROMPT_LEN - 1)) for i in range(NUM_REQUESTS)]
        await asyncio.gather(*(generate(engine, p, params, f"r{i}") for i, p in enumerate(prompts)))
        await asyncio.sleep(0.05)  # the last step's stats travel behind its outputs
        return engine.scheduler.core.block_pool.num_blocks

    num_blocks = run_with_engine(config, body)
    assert sum(s.num_finished for s in stats) == NUM_REQUESTS
    assert sum(s.num_generated_tokens for s in stats) == NUM_REQUESTS * MAX_TOKENS
    # Every prompt token once, then every generated token but the last once more as the next input.
    assert sum(s.num_scheduled_tokens for s in stats) == NUM_REQUESTS * (PROMPT_LEN + MAX_TOKENS - 1)
    assert sum(s.prefix_cache_queries for s in stats) == NUM_REQUESTS * PROMPT_LEN
    assert sum(s.prefix_cache_hits for s in stats) == 0
    assert sum(s.num_preemptions for s in stats) == 0
    assert sum(s.num_pooled for s in stats) == 0
    assert [s.step for s in stats] == list(range(1, len(stats) + 1))
    assert all(s.num_used_blocks + s.num_free_blocks == s.num_total_blocks == num_blocks for s in stats)
    assert max(s.num_running for s in stats) == NUM_REQUESTS
    assert 0.0 < max(s.kv_cache_usage for s in stats) <= 1.0


def test_prefix_hits_are_counted(config):
    stats: list[StepStats] = []

    async def body(engine):
        engine.add_stats_listener(stats.append)
        params = SamplingParams(max_tokens=2, ignore_eos=True)
        shared = list(range(30, 30 + 32))  # two full blocks of 16
        await generate(engine, shared + [5], params, "first")
        await generate(engine, shared + [6], params, "second")
        await asyncio.sleep(0.05)

    run_with_engine(config, body)
    assert sum(s.prefix_cache_queries for s in stats) == 2 * 33
    assert sum(s.prefix_cache_hits for s in stats) == 32


def test_outputs_carry_ordered_request_times(config):
    async def body(engine):
        params = SamplingParams(max_tokens=5, ignore_eos=True)
        return [o async for o in engine.generate(EngineRequest("timed", [5, 6, 7], sampling=params))]

    outputs = run_with_engine(config, body)
    accepted, *tokens = outputs
    assert accepted.times.first_token is None and accepted.token_ids == []
    final = outputs[-1].times
    assert final.arrival <= final.first_scheduled <= final.first_token <= final.latest_token
    assert [o.times.first_token for o in tokens] == [final.first_token] * len(tokens)
    latest = [o.times.latest_token for o in tokens]
    assert latest == sorted(latest)
    parts = (final.queue_time, final.prefill_time, final.decode_time)
    assert all(p >= 0.0 for p in parts)
    assert final.e2e_time == pytest.approx(sum(parts))


def test_a_task_the_model_cannot_serve_is_refused_alone(config):
    async def body(engine):
        audio = EncoderInput(np.zeros((80, 3000), dtype=np.float32), num_encoder_tokens=1500)
        request = EngineRequest("speech", [1, 2], sampling=SamplingParams(max_tokens=3), encoder_input=audio)
        with pytest.raises(InvalidRequestError, match="does not support encoder-decoder"):
            async for _ in engine.generate(request):
                pass
        tokens, _, _ = await generate(engine, [5, 6], SamplingParams(max_tokens=3, ignore_eos=True), "fine")
        assert len(tokens) == 3 and engine.is_healthy

    run_with_engine(config, body)
