"""Deadlines: past its timeout (queue and generation) a request is aborted in the engine, its blocks freed,
and the client gets a 408 (or, once streaming, an error event and the end marker)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kvserve.config import EngineConfig
from kvserve.errors import RequestTimeoutError
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, run_with_engine
from tests.reliability.helpers import (
    LONG,
    all_blocks_free,
    live_server,
    open_stream,
    post,
    read_until,
    sse_data,
    wait_for,
)


def test_engine_aborts_at_the_deadline_and_frees_blocks(long_context_model):
    config = EngineConfig(model=str(long_context_model), kv_cache_memory=16 * MiB, block_size=4)
    params = SamplingParams(max_tokens=8000, min_tokens=8000, ignore_eos=True)

    async def body(engine):
        outputs = []
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="timeout of 0.3 s"):
            async for output in engine.generate(EngineRequest("late", [5] * 8, sampling=params, timeout=0.3)):
                outputs.append(output)
        elapsed = time.monotonic() - started
        for _ in range(100):  # the abort reaches the scheduler within a few messages
            if engine.scheduler.core.block_pool.num_free_blocks == engine.scheduler.core.block_pool.num_blocks:
                break
            await asyncio.sleep(0.01)
        pool = engine.scheduler.core.block_pool
        return elapsed, len(outputs), pool.num_free_blocks == pool.num_blocks, engine.num_timed_out, engine.scheduler

    elapsed, num_outputs, freed, num_timed_out, scheduler = run_with_engine(config, body)
    assert 0.3 <= elapsed < 1.5 and num_outputs >= 1  # it was admitted and ran, then ended at the deadline
    assert freed and num_timed_out == 1 and scheduler.num_aborted == 1


def test_the_queue_counts_against_the_deadline(long_context_model):
    # The server's default applies to requests that give none; the time waiting in the queue counts.
    config = EngineConfig(model=str(long_context_model), kv_cache_memory=16 * MiB, max_num_seqs=1, request_timeout=0.5)
    params = SamplingParams(max_tokens=8000, min_tokens=8000, ignore_eos=True)

    async def run(engine, request_id):
        try:
            async for _ in engine.generate(EngineRequest(request_id, [5] * 8, sampling=params)):
                pass
            return "finished"
        except RequestTimeoutError:
            return "timed out"

    async def body(engine):
        return await asyncio.gather(*(run(engine, f"r{i}") for i in range(3)))

    assert run_with_engine(config, body) == ["timed out"] * 3


@pytest.fixture(scope="module")
def live(long_context_model):
    server = live_server(long_context_model, request_timeout=30.0)
    yield server
    server.stop()


def test_non_streamed_timeout_is_408(live):
    status, _, body = post(live.port, "/v1/completions", {**LONG, "request_timeout": 0.2})
    assert status == 408, body
    assert body["error"]["type"] == "RequestTimeoutError" and "0.2 s" in body["error"]["message"]
    wait_for(lambda: all_blocks_free(live), timeout=2)


def test_streamed_timeout_ends_with_an_error_event(live):
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8000, "min_tokens": 8000}
    sock = open_stream(live.port, "/v1/chat/completions", {**payload, "ignore_eos": True, "request_timeout": 1})
    received = read_until(sock, b"data: [DONE]")
    sock.close()
    events = sse_data(received)
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert len(events) > 3, "tokens were streamed before the deadline"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 408 and "timeout of 1 s" in error["message"]
    wait_for(lambda: all_blocks_free(live), timeout=2)
    assert live.engine.is_healthy


def test_a_request_may_not_outlast_the_server_timeout(live):
    status, _, body = post(live.port, "/v1/completions", {"prompt": "x", "request_timeout": 31})
    assert status == 400 and body["error"]["param"] == "request_timeout"
    assert "--request-timeout (30.0 s)" in body["error"]["message"]
    for bad in (0, -1, "soon", 1e300):
        assert post(live.port, "/v1/completions", {"prompt": "x", "request_timeout": bad})[0] == 400
    assert post(live.port, "/v1/completions", {"prompt": "x", "max_tokens": 2, "request_timeout": 29})[0] == 200
