"""The GPU runner on a GPU: memory planning from a profiled step, CUDA-graph replay token-exact against eager
steps, and input staging through pinned memory. Skipped without CUDA (benchmarks/gpu_check.sh runs them)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.input_staging import InputStaging
from kvserve.model.memory_planning import ModelDoesNotFitError
from kvserve.model.model_config import ModelConfig
from kvserve.model.runner import ModelRunner
from kvserve.sampling_params import SamplingParams
from tests.model.batches import RunnerDriver, prepared
from tests.tiny_models import build_model

pytestmark = pytest.mark.cuda

GREEDY = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def llama_d64(tmp_path_factory, tokenizer_dir):
    # head_dim 64: attention runs the CUDA kernel (the path graphs capture), not the reference.
    return build_model(
        "llama", tmp_path_factory.mktemp("gpu-runner") / "llama-d64", tokenizer_dir, hidden_size=256,
        intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip


def make_runner(model_dir, **engine) -> ModelRunner:
    config = EngineConfig(
        model=str(model_dir), device="cuda", dtype="float32", block_size=16, max_model_len=512,
        max_num_seqs=16, max_num_batched_tokens=1024, **engine,
    )  # fmt: skip
    return ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir)


def release(runner: ModelRunner) -> None:
    runner.kv_caches, runner.cuda_graphs, runner.model = [], None, None
    gc.collect()
    torch.cuda.empty_cache()


def test_the_kv_cache_takes_what_the_profiled_step_leaves(llama_d64):
    total = torch.cuda.mem_get_info()[1]
    runner = make_runner(llama_d64, gpu_memory_utilization=0.1, enforce_eager=True)
    kv_bytes = sum(cache.nbytes for cache in runner.kv_caches)
    assert runner.num_blocks > 512 // 16
    # Everything torch holds stays within the share asked for (the non-torch part is outside memory_allocated).
    assert torch.cuda.memory_allocated() <= 0.1 * total
    assert kv_bytes > 0.05 * total  # a tiny model: nearly all of the share is KV cache
    release(runner)


def test_a_share_too_small_for_the_cuda_context_fails_at_start_with_the_numbers(llama_d64):
    # 0.2% of the card is less than the CUDA context alone (the non-torch part of the profile), or than what
    # earlier tests in this process left allocated (counted with the weights).
    with pytest.raises(ModelDoesNotFitError) as error:
        make_runner(llama_d64, gpu_memory_utilization=0.002, enforce_eager=True)
    assert "0.002" in str(error.value) and "--gpu-memory-utilization" in str(error.value)
    gc.collect()
    torch.cuda.empty_cache()


def greedy_run(runner: ModelRunner, prompts: list[list[int]], steps: int) -> tuple[list[list[int]], int]:
    """Greedy tokens per request, and how many steps replayed a graph."""
    driver = RunnerDriver(runner, max_blocks_per_request=32)
    for slot, prompt in enumerate(prompts):
        driver.add(slot, prepared(f"r{slot}", prompt, GREEDY))
    replays = 0
    original = runner.prepare_inputs

    def counting(batch):
        nonlocal replays
        inputs = original(batch)
        replays += inputs.graph_size is not None
        return inputs

    runner.prepare_inputs = counting
    for _ in range(steps):
        driver.step()
    return [driver.rows[slot].token_ids[len(p) :] for slot, p in enumerate(prompts)], replays


def test_graph_replay_is_token_exact_against_eager_steps(llama_d64):
    rng = np.random.default_rng(11)
    prompts = [rng.integers(3, 384, n).tolist() for n in (5, 17, 40, 3, 64)]  # 5 rows: padded to the graph of 8
    eager_runner = make_runner(llama_d64, kv_cache_memory=64 << 20, enforce_eager=True)
    eager, eager_replays = greedy_run(eager_runner, prompts, steps=24)
    release(eager_runner)
    graph_runner = make_runner(llama_d64, kv_cache_memory=64 << 20)
    assert graph_runner.captured_graph_sizes() == [1, 2, 4, 8, 16]  # a failed capture (eager fallback) fails here
    graphed, replays = greedy_run(graph_runner, prompts, steps=24)
    release(graph_runner)
    assert (eager_replays, replays) == (0, 23)  # every step after the prompts
    assert graphed == eager


def test_staging_copies_through_pinned_memory():
    staging = InputStaging(torch.device("cuda"), capacity=1 << 16)
    assert staging._buffers[0].host.is_pinned()
    rng = np.random.default_rng(0)
    for _ in range(3):  # both buffers, then the first again
        arrays = [rng.integers(0, 1 << 40, 300), rng.integers(0, 1000, (17, 9)).astype(np.int32)]
        tensors = staging.to_device(arrays)
        assert all(t.is_cuda for t in tensors)
        for array, tensor in zip(arrays, tensors):
            np.testing.assert_array_equal(tensor.cpu().numpy(), array)
