"""Async scheduling (step N+1 scheduled while step N executes) changes no output.

The same mix of requests runs with it on and off: token ids, texts and finish reasons must be identical, for
greedy and seeded sampling (several samples of one prompt, as n > 1 sends them), max_tokens of 1, min_tokens
with stop token ids, stop strings (found by the detokenizer, which aborts), penalties, logprobs, structured
outputs (which opt out of the overlap), an abort mid-stream, and preemption under a tiny KV cache. Every run
must leave every block free and the core's invariants intact, and the run with it on must actually overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from kvserve.config import EngineConfig
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams
from kvserve.structured.spec import GrammarSpec
from tests.engine.test_greedy_exact import random_prompts
from tests.engine_helpers import MiB, generate, run_with_engine

GREEDY = dict(temperature=0.0, ignore_eos=True)


async def _abort_after(engine, prompt: list[int], num_tokens: int) -> tuple[list[int], str, str]:
    """Leaves the stream (which aborts the request) once num_tokens tokens have arrived."""
    params = SamplingParams(max_tokens=200, **GREEDY)
    tokens: list[int] = []
    async for output in engine.generate(EngineRequest("aborted", prompt, sampling=params)):
        tokens += output.token_ids
        if len(tokens) >= num_tokens:
            break
    return tokens[:num_tokens], "", "left"


async def _mixed(engine) -> dict[str, tuple]:
    prompts = random_prompts(8, 5, 40, seed=11)
    # A probe whose greedy text gives a stop string and a stop token that do occur.
    probe_tokens, probe_text, _ = await generate(engine, prompts[0], SamplingParams(max_tokens=24, **GREEDY), "probe")
    stop_string = probe_text[len(probe_text) // 2 : len(probe_text) // 2 + 3]
    stop_token = probe_tokens[6]
    requests = {
        "greedy": (prompts[1], SamplingParams(max_tokens=30, **GREEDY)),
        "one_token": (prompts[2], SamplingParams(max_tokens=1, **GREEDY)),
        "stop_string": (prompts[0], SamplingParams(max_tokens=24, stop=(stop_string,), **GREEDY)),
        "stop_token": (prompts[0], SamplingParams(max_tokens=24, min_tokens=2, stop_token_ids=(stop_token,), **GREEDY)),
        "penalties": (prompts[3], SamplingParams(max_tokens=20, seed=5, repetition_penalty=1.5, frequency_penalty=0.5)),
        "logprobs": (prompts[4], SamplingParams(max_tokens=12, logprobs=2, **GREEDY)),
        "structured": (
            prompts[5],
            SamplingParams(max_tokens=20, seed=3, structured=GrammarSpec.choices(["red", "green", "blue and yellow"])),
        ),
        **{f"sample{i}": (prompts[6], SamplingParams(max_tokens=16, seed=i, temperature=1.0)) for i in range(3)},
    }

    async def one(request_id: str, prompt: list[int], params: SamplingParams) -> tuple:
        tokens: list[int] = []
        text, logprobs, finish_reason = "", [], None
        async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params)):
            tokens += output.token_ids
            text += output.text
            finish_reason = output.finish_reason
            for position in output.logprobs or ():
                logprobs += [(t.token_id, round(t.logprob, 4)) for t in (position.sampled, *position.top)]
        return tokens, text, finish_reason, logprobs

    results = await asyncio.gather(
        *(one(rid, prompt, params) for rid, (prompt, params) in requests.items()),
        _abort_after(engine, prompts[7], 5),
    )
    outputs = dict(zip([*requests, "aborted"], results))
    assert outputs["stop_string"][2] == "stop" and stop_string not in outputs["stop_string"][1]
    assert outputs["stop_token"][2] == "stop" and outputs["stop_token"][0][-1] == stop_token
    assert len(outputs["one_token"][0]) == 1 and len(outputs["logprobs"][3]) == 12 * 3
    assert outputs["structured"][1] in ("red", "green", "blue and yellow")
    return outputs


def _run(config: EngineConfig, body) -> tuple[dict, int]:
    async def checked(engine):
        result = await body(engine)
        while engine.scheduler.core.has_unfinished:  # the aborted request's abort is on its way
            await asyncio.sleep(0.01)
        core = engine.scheduler.core
        assert core.block_pool.num_free_blocks == core.block_pool.num_blocks
        core.check_invariants()
        return result, engine.scheduler.num_overlapped_steps

    return run_with_engine(config, checked)


@pytest.fixture(scope="module")
def base_config(tiny_model_dir) -> EngineConfig:
    return EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=8 * MiB, block_size=4)


def test_outputs_are_identical_with_and_without_overlap(base_config):
    on, overlapped = _run(dataclasses.replace(base_config, async_scheduling=True), _mixed)
    off, not_overlapped = _run(dataclasses.replace(base_config, async_scheduling=False), _mixed)
    assert overlapped > 0 and not_overlapped == 0
    assert on == off


def test_preemption_with_a_step_in_flight_is_exact(base_config):
    prompts = random_prompts(6, 20, 40, seed=12)
    stats: list = []

    async def body(engine):
        engine.add_stats_listener(stats.append)
        params = SamplingParams(max_tokens=30, **GREEDY)
        return await asyncio.gather(*(generate(engine, p, params, f"r{i}") for i, p in enumerate(prompts)))

    # 24 blocks of 4 tokens (2 KiB each, see test_greedy_exact): six requests of up to 70 tokens preempt.
    tiny = dataclasses.replace(base_config, kv_cache_memory=48 * 1024, max_model_len=96)
    on, overlapped = _run(dataclasses.replace(tiny, async_scheduling=True), body)
    assert overlapped > 0 and sum(s.num_preemptions for s in stats) > 0
    off, _ = _run(dataclasses.replace(tiny, async_scheduling=False), body)
    assert [tokens for tokens, _, _ in on] == [tokens for tokens, _, _ in off]


@pytest.mark.cuda
def test_on_a_gpu_steps_launch_behind_pending_results_and_change_no_output(base_config):
    """On CUDA a step's launch returns before the device has finished it, so the runner thread launches step
    N+1 (sent while N runs) right behind N, and N's ids reach the host on the waiter thread (actors/runner.py)."""
    cuda = dataclasses.replace(base_config, device="cuda", dtype="float32")
    returned_early = []

    async def body(engine):
        outputs = await _mixed(engine)
        returned_early.append(engine.runner.num_returned_early)
        return outputs

    on, overlapped = _run(dataclasses.replace(cuda, async_scheduling=True), body)
    off, _ = _run(dataclasses.replace(cuda, async_scheduling=False), body)
    assert on == off and overlapped > 0
    assert returned_early[0] > 0
