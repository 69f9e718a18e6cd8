"""TP=2 over gloo on CPU: greedy outputs token-exact with TP=1, per-rank collective RPC, a killed worker
failing its engine loudly, and no worker process left behind.

Each TP=2 engine spawns two processes (seconds each), so one Llama engine is shared by the module and the
test that kills one of its workers runs last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.errors import EngineDeadError, InvalidRequestError
from kvserve.executor import check_tensor_parallel
from kvserve.llm import LLM
from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import QuantizationConfig
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams
from kvserve.structured.spec import GrammarSpec
from tests.engine_helpers import MiB
from tests.tiny_models import VOCAB_SIZE

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
ENGINE_ARGS = dict(kv_cache_memory=8 * MiB, block_size=8, max_num_batched_tokens=64)  # chunked prefill


def prompts(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, VOCAB_SIZE) for _ in range(rng.randint(1, 90))] for _ in range(6)]


def greedy_tokens(llm: LLM, batch: list[list[int]]) -> list[list[int]]:
    return [output.outputs[0].token_ids for output in llm.generate(batch, GREEDY, use_tqdm=False)]


def worker_pids(llm: LLM) -> list[int]:
    return [process.pid for process in llm._engine.executor.processes]


def assert_gone(pids: list[int]) -> None:
    """Neither running nor a zombie: stopped and reaped."""
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its engine"


@pytest.fixture(scope="module")
def tp_llama(tiny_model_dir):
    llm = LLM(str(tiny_model_dir("llama")), tensor_parallel_size=2, **ENGINE_ARGS)
    yield llm
    pids = worker_pids(llm)
    llm.shutdown()
    assert_gone(pids)


def test_llama_tp2_greedy_is_token_exact_with_tp1(tiny_model_dir, tp_llama):
    """Plain greedy rows, and a row under a grammar (each rank keeps its own matchers)."""
    batch = prompts(seed=0)
    constrained = SamplingParams(max_tokens=24, temperature=0.0, structured=GrammarSpec("regex", r"[a-z]{5,30}\."))
    with LLM(str(tiny_model_dir("llama")), **ENGINE_ARGS) as tp1:
        expected = greedy_tokens(tp1, batch)
        expected_text = tp1.generate([3, 4, 5], constrained, use_tqdm=False)[0].outputs[0].text
    assert greedy_tokens(tp_llama, batch) == expected
    assert tp_llama.generate([3, 4, 5], constrained, use_tqdm=False)[0].outputs[0].text == expected_text


def test_qwen3_tp2_greedy_is_token_exact_with_tp1_and_leaves_no_process(tiny_model_dir):
    batch = prompts(seed=1)
    with LLM(str(tiny_model_dir("qwen3")), **ENGINE_ARGS) as tp1:
        expected = greedy_tokens(tp1, batch)
    with LLM(str(tiny_model_dir("qwen3")), tensor_parallel_size=2, **ENGINE_ARGS) as tp2:
        pids = worker_pids(tp2)
        assert greedy_tokens(tp2, batch) == expected
    assert_gone(pids)


def test_collective_rpc_returns_one_result_per_rank(tp_llama):
    results = tp_llama.collective_rpc("memory_bytes")
    assert len(results) == 2
    # Same block count on both ranks, each with its one KV head of two.
    assert results[0]["kv_cache"] == results[1]["kv_cache"] > 0
    layers, block_size, kv_heads_per_rank, head_dim, float32 = 2, 8, 1, 16, 4
    block_bytes = 2 * layers * block_size * kv_heads_per_rank * head_dim * float32
    assert results[0]["kv_cache"] == tp_llama._engine.executor.num_blocks * block_bytes
    with pytest.raises(InvalidRequestError, match="no method 'no_such_method'"):
        tp_llama.collective_rpc("no_such_method")


def test_what_tensor_parallelism_refuses(tiny_model_dir, monkeypatch):
    with pytest.raises(ValueError, match="no pipeline parallelism"):
        EngineConfig(model="m", pipeline_parallel_size=2)
    model_dir = tiny_model_dir("llama")
    model_config = ModelConfig.from_directory(model_dir)
    tp2 = EngineConfig(model=str(model_dir), tensor_parallel_size=2)
    cpu = torch.device("cpu")
    refusals = [
        (EngineConfig(model=str(model_dir), tensor_parallel_size=3), model_config, cpu, r"num_attention_heads \(4\)"),
        (tp2, dataclasses.replace(model_config, architecture="BertModel"), cpu, "BertModel does not support"),
        (tp2, dataclasses.replace(model_config, quantization=QuantizationConfig.for_method("fp8")), cpu, "quantized"),
        (EngineConfig(model="model.Q4_K_M.gguf", tensor_parallel_size=2), model_config, cpu, "GGUF"),
        (tp2, model_config, torch.device("cuda"), "needs 2 GPUs, but only 1 are visible"),
    ]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for config, model, device, message in refusals:
        with pytest.raises(ValueError, match=message):
            check_tensor_parallel(config, model, device)


def test_a_killed_worker_fails_the_request_in_flight_and_the_engine(tp_llama):
    """Runs last: it kills the shared engine's rank 1 while a long request decodes."""
    engine = tp_llama._engine

    async def long_request() -> int:
        params = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
        received = 0
        async for output in engine.generate(EngineRequest("long", [5, 6, 7], sampling=params)):
            received += len(output.token_ids)
            if received >= 4 and received - len(output.token_ids) < 4:
                os.kill(worker_pids(tp_llama)[1], signal.SIGKILL)
        return received

    started = time.monotonic()
    future = asyncio.run_coroutine_threadsafe(long_request(), tp_llama._engine_loop.loop)
    with pytest.raises(EngineDeadError, match=r"tensor-parallel worker rank 1 \(pid \d+\) died"):
        future.result(timeout=60)
    assert time.monotonic() - started < 30
    assert not engine.is_healthy
    with pytest.raises(EngineDeadError):
        tp_llama.generate([1, 2, 3], GREEDY, use_tqdm=False)
