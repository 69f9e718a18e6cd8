"""AsyncEngine behaviour: aborts free blocks, seeds are batch-independent, failures are loud, bad input is
rejected per request, stop strings and logprobs reach the outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import time

import pytest

from kvserve.config import EngineConfig
from kvserve.errors import EngineDeadError, InvalidRequestError
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams
from tests.engine.test_greedy_exact import random_prompts
from tests.engine_helpers import MiB, generate, hf_greedy, run_with_engine


@pytest.fixture
def config(tiny_model_dir) -> EngineConfig:
    return EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=4 * MiB, block_size=4)


def free_and_total(engine) -> tuple[int, int]:
    pool = engine.scheduler.core.block_pool
    return pool.num_free_blocks, pool.num_blocks


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_leaving_the_stream_aborts_and_frees_every_block(config):
    async def body(engine):
        params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
        received = []
        async for output in engine.generate(EngineRequest("long", list(range(10, 50)), sampling=params)):
            received.append(output)
            if len(received) == 3:
                break
        await wait_until(lambda: not engine.scheduler.core.has_unfinished)
        free, total = free_and_total(engine)
        assert free == total
        engine.scheduler.core.check_invariants()
        # The engine still serves afterwards.
        tokens, _, final = await generate(engine, [5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True), "next")
        assert len(tokens) == 4 and final.finish_reason == "length"

    run_with_engine(config, body)


def test_the_idle_hook_runs_once_the_engine_has_stayed_idle(config):
    """The scheduler calls on_idle (the engine's malloc trim) idle_delay after the last work ends, never while a
    request runs, and not at all when work comes back within the delay."""

    async def body(engine):
        loop = asyncio.get_running_loop()
        calls = []
        scheduler = engine.scheduler
        scheduler.on_idle = lambda: calls.append((loop.time(), scheduler.core.has_unfinished, len(scheduler.in_flight)))
        scheduler.idle_delay = 0.3
        params = SamplingParams(max_tokens=30, ignore_eos=True)
        await generate(engine, [5, 6, 7], params, "first")
        await generate(engine, [5, 6, 7], params, "within the delay")
        second_finished = loop.time()
        await wait_until(lambda: calls)
        await asyncio.sleep(0.5)
        assert len(calls) == 1
        (at, unfinished, in_flight) = calls[0]
        assert at > second_finished and not unfinished and in_flight == 0

    run_with_engine(config, body)


def test_abort_by_id_ends_the_stream_with_abort(config):
    async def body(engine):
        params = SamplingParams(max_tokens=500, ignore_eos=True)
        stream = engine.generate(EngineRequest("victim", [10, 11, 12], sampling=params))
        first = await anext(stream)
        engine.abort("victim")
        rest = [o async for o in stream]
        assert not first.finished and rest[-1].finished and rest[-1].finish_reason == "abort"
        await wait_until(lambda: free_and_total(engine)[0] == free_and_total(engine)[1])
        engine.abort("victim")  # unknown by now: ignored

    run_with_engine(config, body)


def test_seeded_sampling_does_not_depend_on_the_batch(config):
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    prompt = list(range(20, 40))

    async def alone(engine):
        return (await generate(engine, prompt, params, "alone"))[0]

    async def crowded(engine):
        others = [
            generate(engine, p, SamplingParams(max_tokens=25, temperature=1.0, ignore_eos=True), f"o{i}")
            for i, p in enumerate(random_prompts(8, 3, 30, seed=9))
        ]
        results = await asyncio.gather(*others[:4], generate(engine, prompt, params, "seeded"), *others[4:])
        return results[4][0]

    assert run_with_engine(config, alone) == run_with_engine(config, crowded)


def test_unseeded_sampling_varies(config):
    async def body(engine):
        params = SamplingParams(max_tokens=16, temperature=1.0, ignore_eos=True)
        results = await asyncio.gather(*(generate(engine, [7, 8, 9], params, f"r{i}") for i in range(4)))
        return {tuple(tokens) for tokens, _, _ in results}

    assert len(run_with_engine(config, body)) > 1


def test_bad_requests_fail_alone(config):
    async def body(engine):
        params = SamplingParams(max_tokens=4, ignore_eos=True)
        with pytest.raises(InvalidRequestError, match="out of vocabulary"):
            await generate(engine, [1, 10**6], params, "bad-vocab")
        with pytest.raises(InvalidRequestError, match="context length is only 512 tokens"):
            await generate(engine, [5] * 600, params, "too-long")
        with pytest.raises(InvalidRequestError, match="empty"):
            await generate(engine, [], params, "empty")
        with pytest.raises(InvalidRequestError, match="must be integers"):
            await generate(engine, [5, "6", 7.0], params, "not-ints")
        with pytest.raises(InvalidRequestError, match="already in use"):
            stream = engine.generate(
                EngineRequest("dup", [5], sampling=SamplingParams(max_tokens=100, ignore_eos=True))
            )
            await anext(stream)
            await generate(engine, [5], params, "dup")
        await stream.aclose()
        tokens, _, _ = await generate(engine, [5, 6], params, "fine")
        assert len(tokens) == 4 and engine.is_healthy

    run_with_engine(config, body)


def test_a_failing_actor_fails_every_request_and_marks_the_engine_dead(config):
    async def body(engine):
        params = SamplingParams(max_tokens=400, ignore_eos=True)
        running = [asyncio.create_task(generate(engine, [5, 6, 7], params, f"r{i}")) for i in range(3)]
        await wait_until(lambda: engine.scheduler.core.num_running == 3)

        def broken(batch):
            raise RuntimeError("device lost")

        engine.runner.executor.runner.launch = broken
        results = await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), timeout=10)
        assert all(isinstance(r, EngineDeadError) for r in results), results
        assert "device lost" in str(results[0]) and not engine.is_healthy
        with pytest.raises(EngineDeadError):
            await generate(engine, [5], params, "after")

    run_with_engine(config, body)


def test_steps_queued_behind_a_failed_one_leave_no_unretrieved_exception(config):
    """Each step launched after the failing one fails too; their errors are taken, so asyncio never logs
    "Future exception was never retrieved" when the futures are collected. Only async scheduling queues a
    step behind a running one, so the test turns it on whatever the environment says."""

    async def body(engine):
        loop = asyncio.get_running_loop()
        unhandled = []
        loop.set_exception_handler(lambda _, context: unhandled.append(context["message"]))
        params = SamplingParams(max_tokens=400, ignore_eos=True)
        running = [asyncio.create_task(generate(engine, [5, 6, 7], params, f"r{i}")) for i in range(3)]
        await wait_until(lambda: engine.scheduler.core.num_running == 3)
        launches = []

        def broken(batch):
            launches.append(batch)
            time.sleep(0.05)  # long enough for the scheduler to queue the next step behind this one
            raise RuntimeError("device lost")

        engine.runner.executor.runner.launch = broken
        await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), timeout=10)
        await wait_until(lambda: all(launched.done() for launched in engine.runner.undelivered))
        assert len(launches) >= 2  # a step did queue behind the failing one
        engine.runner.undelivered.clear()
        gc.collect()
        await asyncio.sleep(0)
        assert unhandled == []

    run_with_engine(dataclasses.replace(config, async_scheduling=True), body)


def test_eos_stops_and_is_not_rendered(config, tiny_model_dir):
    # Make EOS the greedy continuation: find the token greedy decoding picks, then call it EOS.
    model_dir = tiny_model_dir("llama")
    prompt = list(range(30, 60))
    greedy = hf_greedy(model_dir, prompt, 3)

    async def body(engine):
        params = SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=(greedy[2],))
        return await generate(engine, prompt, params, "stop-token")

    tokens, text, final = run_with_engine(config, body)
    assert tokens == greedy
    assert (final.finish_reason, final.stop_reason) == ("stop", greedy[2])
    tokenizer = __import__("tokenizers").Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert text == tokenizer.decode(greedy[:2])


def test_stop_string_truncates_and_reports(config, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    prompt = list(range(60, 90))
    greedy = hf_greedy(model_dir, prompt, 12)
    tokenizer = __import__("tokenizers").Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    full = tokenizer.decode(greedy)
    stop = full[5:8]
    expected = full[: full.index(stop)]

    async def body(engine):
        params = SamplingParams(max_tokens=12, temperature=0.0, stop=(stop,))
        return await generate(engine, prompt, params, "stop-string")

    tokens, text, final = run_with_engine(config, body)
    assert text == expected
    assert (final.finish_reason, final.stop_reason) == ("stop", stop)
    assert tokens == greedy[: len(tokens)] and len(tokens) < 12


def test_logprobs_are_raw_log_softmax(config):
    async def body(engine):
        params = SamplingParams(max_tokens=5, temperature=0.0, logprobs=3, ignore_eos=True)
        outputs = [o async for o in engine.generate(EngineRequest("lp", [40, 41, 42], sampling=params))]
        return [lp for o in outputs for lp in o.logprobs or []], [t for o in outputs for t in o.token_ids]

    positions, tokens = run_with_engine(config, body)
    assert len(positions) == 5
    for position, token in zip(positions, tokens):
        assert position.sampled.token_id == token and position.sampled.rank == 1  # greedy picks the top
        assert len(position.top) == 3
        assert [t.rank for t in position.top] == [1, 2, 3]
        assert position.top[0].token_id == token
        values = [t.logprob for t in position.top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert math.isclose(position.top[0].logprob, position.sampled.logprob)


def test_prompt_logprobs_match_transformers(config, tiny_model_dir):
    import torch

    from tests.engine_helpers import _hf_model

    prompt = list(range(100, 137))
    with torch.no_grad():
        reference = torch.log_softmax(_hf_model(tiny_model_dir("llama"))(torch.tensor([prompt])).logits[0], -1)

    async def body(engine):
        # Run it twice with a small token budget: chunked, and the second time past a warm prefix cache.
        params = SamplingParams(max_tokens=1, prompt_logprobs=2, ignore_eos=True)
        results = []
        for request_id in ("first", "again"):
            _, _, final = await generate(engine, prompt, params, request_id)
            results.append(final.prompt_logprobs)
        return results

    small_budget = EngineConfig(model=config.model, kv_cache_memory=4 * MiB, block_size=4, max_num_batched_tokens=8)
    for positions in run_with_engine(small_budget, body):
        assert len(positions) == len(prompt) and positions[0] is None
        for index, position in enumerate(positions[1:], start=1):
            expected = reference[index - 1]
            assert position.sampled.token_id == prompt[index]
            assert math.isclose(position.sampled.logprob, float(expected[prompt[index]]), abs_tol=1e-4)
            assert position.sampled.rank == int((expected > expected[prompt[index]]).sum()) + 1
            assert [t.token_id for t in position.top] == expected.topk(2).indices.tolist()


def test_context_length_must_fit_the_kv_cache(tiny_model_dir):
    from kvserve.engine.async_engine import context_length
    from kvserve.model.model_config import ModelConfig

    model_config = ModelConfig.from_directory(tiny_model_dir("llama"))  # max_position_embeddings 512
    model = str(tiny_model_dir("llama"))
    assert context_length(EngineConfig(model=model), model_config, 10_000) == 512
    assert context_length(EngineConfig(model=model), model_config, 300) == 300  # capped, with a warning
    assert context_length(EngineConfig(model=model, max_model_len=200), model_config, 300) == 200
    with pytest.raises(ValueError, match="larger than the number of tokens the KV cache can hold"):
        context_length(EngineConfig(model=model, max_model_len=400), model_config, 300)
