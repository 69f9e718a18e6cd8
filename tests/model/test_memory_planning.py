"""KV cache planning: the arithmetic on fake measurements, the profiling step's inputs on the CPU."""

from __future__ import annotations

import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.memory_planning import (
    GiB,
    MemoryProfile,
    ModelDoesNotFitError,
    cuda_graph_pool_estimate,
    plan_kv_cache,
    profile_memory,
    profiling_inputs,
    resolve_kv_cache_dtype,
)
from kvserve.model.model_config import ModelConfig
from kvserve.model.runner import ModelRunner

MiB = 1 << 20
# An 80 GiB card serving ~16 GiB of weights: 0.9 x 80 - 16 - 2 - 1 - 1 = 52 GiB of KV cache.
PROFILE = MemoryProfile(total=80 * GiB, weights=16 * GiB, peak_activations=2 * GiB, non_torch=GiB, cuda_graphs=GiB)
BLOCK = dict(block_bytes=2 * MiB, block_size=16)  # Llama-3-8B in bf16: 128 KiB per token, 2 MiB per block


def test_the_budget_is_what_the_weights_activations_and_graphs_leave():
    plan = plan_kv_cache(**BLOCK, max_model_len=8192, profile=PROFILE, gpu_memory_utilization=0.9)
    budget = int(0.9 * 80 * GiB) - 20 * GiB
    assert plan.budget == budget
    assert plan.num_blocks == budget // (2 * MiB)
    assert plan.max_concurrency == pytest.approx(plan.num_blocks / 512)  # 8192 tokens = 512 blocks
    assert plan.describe(16).endswith(f"maximum concurrency for 8192 tokens per request: {plan.max_concurrency:.1f}x")


def test_utilization_limits_the_budget():
    full = plan_kv_cache(**BLOCK, max_model_len=8192, profile=PROFILE, gpu_memory_utilization=1.0)
    half = plan_kv_cache(**BLOCK, max_model_len=8192, profile=PROFILE, gpu_memory_utilization=0.5)
    assert full.budget - half.budget == 40 * GiB
    assert half.budget == 20 * GiB


def test_kv_cache_memory_overrides_the_profile():
    plan = plan_kv_cache(**BLOCK, max_model_len=8192, kv_cache_memory=3 * MiB, profile=PROFILE)
    assert (plan.num_blocks, plan.budget) == (1, 3 * MiB)  # fewer blocks than one request: the user's choice


def test_weights_over_the_budget_fail_with_the_numbers_and_the_flags():
    heavy = MemoryProfile(total=80 * GiB, weights=75 * GiB, peak_activations=0, non_torch=0, cuda_graphs=0)
    with pytest.raises(ModelDoesNotFitError) as error:
        plan_kv_cache(**BLOCK, max_model_len=8192, profile=heavy, gpu_memory_utilization=0.9)
    message = str(error.value)
    assert "75.00 GiB" in message and "72.00 GiB" in message and "--gpu-memory-utilization" in message


def test_no_room_left_after_activations_fails():
    tight = MemoryProfile(total=80 * GiB, weights=60 * GiB, peak_activations=10 * GiB, non_torch=2 * GiB, cuda_graphs=0)
    with pytest.raises(ModelDoesNotFitError, match="no memory left for the KV cache.*--max-num-batched-tokens"):
        plan_kv_cache(**BLOCK, max_model_len=8192, profile=tight, gpu_memory_utilization=0.9)


def test_fewer_blocks_than_one_max_model_len_request_fails_when_the_length_was_asked_for():
    small = MemoryProfile(total=80 * GiB, weights=70 * GiB, peak_activations=GiB, non_torch=0, cuda_graphs=0)
    # 72 - 71 = 1 GiB = 512 blocks = 8192 tokens: a 16384-token request does not fit.
    with pytest.raises(ModelDoesNotFitError, match=r"room for 8192 tokens.*--max-model-len 16384 needs \(1024 blocks"):
        plan_kv_cache(**BLOCK, max_model_len=16384, profile=small, gpu_memory_utilization=0.9)
    # The model's own limit is capped to the cache by the engine instead.
    capped = plan_kv_cache(
        **BLOCK, max_model_len=16384, profile=small, gpu_memory_utilization=0.9, require_max_model_len=False
    )
    assert capped.num_blocks == 512 and capped.max_concurrency == 0.5


def test_the_graph_pool_estimate_scales_with_the_largest_graph():
    assert cuda_graph_pool_estimate(4 * GiB, 8192, 0) == 0
    assert cuda_graph_pool_estimate(4 * GiB, 8192, 512) == GiB // 4 + 256 * MiB


def test_fp8_kv_cache_is_refused_clearly():
    assert resolve_kv_cache_dtype("auto", torch.bfloat16, torch.device("cpu")) is torch.bfloat16
    # On CPU a half-precision cache under float32 activations; on CUDA only the model's own dtype.
    assert resolve_kv_cache_dtype("float16", torch.float32, torch.device("cpu")) is torch.float16
    assert resolve_kv_cache_dtype("bfloat16", torch.float32, torch.device("cpu")) is torch.bfloat16
    assert resolve_kv_cache_dtype("bfloat16", torch.bfloat16, torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="--kv-cache-dtype float16 is not supported with a float32 model on cuda"):
        resolve_kv_cache_dtype("float16", torch.float32, torch.device("cuda"))
    with pytest.raises(ValueError, match="--kv-cache-dtype fp8 is not supported: the CPU kernels"):
        resolve_kv_cache_dtype("fp8", torch.bfloat16, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"csrc/kernels/cache.cu"):
        resolve_kv_cache_dtype("fp8", torch.bfloat16, torch.device("cuda"))
    with pytest.raises(ValueError, match="kv_cache_dtype must be"):
        EngineConfig(model="m", kv_cache_dtype="int8")


def test_the_profiling_step_runs_the_largest_batch(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    config = ModelConfig.from_directory(model_dir)
    input_ids, positions, ctx = profiling_inputs(config, 37, 4, 16, torch.float32, torch.device("cpu"))
    assert input_ids.shape == (37,)
    assert ctx.query_start_loc.tolist() == [0, 9, 18, 27, 37]
    assert positions.tolist() == [*range(9), *range(9), *range(9), *range(10)]
    assert ctx.token_seq_lens.tolist() == [9] * 27 + [10] * 10
    assert ctx.block_tables.shape == (4, 1) and ctx.max_query_len == ctx.max_seq_len == 10
    assert len(ctx.kv_caches) == config.num_hidden_layers and ctx.kv_caches[0].shape[1] == 1
    engine = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, max_num_seqs=48, max_num_batched_tokens=40)
    runner = ModelRunner(engine, config, model_dir)
    runner._profile_step()  # on the CPU the forward and sampler temporaries run as they would on CUDA
    assert runner.max_num_batched_tokens == 40


def test_an_fp8_kv_cache_fails_at_start(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    engine = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, kv_cache_dtype="fp8")
    with pytest.raises(ValueError, match="--kv-cache-dtype fp8 is not supported"):
        ModelRunner(engine, ModelConfig.from_directory(model_dir), model_dir)


def test_profile_memory_reads_weights_peak_and_non_torch_memory(monkeypatch):
    # The allocator's counters as CUDA would report them around the profiling step (no GPU needed).
    allocated = iter([10 * GiB])
    counters = {
        "synchronize": lambda device=None: None,
        "empty_cache": lambda: None,
        "reset_peak_memory_stats": lambda device=None: None,
        "memory_allocated": lambda device=None: next(allocated),
        "max_memory_allocated": lambda device=None: 13 * GiB,
        "mem_get_info": lambda device=None: (60 * GiB, 80 * GiB),  # 20 GiB used by the process
        "memory_reserved": lambda device=None: 14 * GiB,
    }
    for name, fake in counters.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    steps = []
    profile = profile_memory(torch.device("cuda"), lambda: steps.append(1), lambda peak: peak // 3)
    assert steps == [1]
    assert profile == MemoryProfile(
        total=80 * GiB, weights=10 * GiB, peak_activations=3 * GiB, non_torch=6 * GiB, cuda_graphs=GiB
    )


def test_the_gpu_flags_reach_the_engine_config():
    from kvserve.cli import build_parser, engine_config_from_args

    args = build_parser().parse_args(
        ["serve", "m", "--gpu-memory-utilization", "0.8", "--enforce-eager", "--cuda-graph-sizes", "1", "4"]
    )
    config = engine_config_from_args(args)
    assert (config.gpu_memory_utilization, config.enforce_eager, config.cuda_graph_sizes) == (0.8, True, (1, 4))
    assert config.kv_cache_dtype == "auto"
    fp8 = engine_config_from_args(build_parser().parse_args(["serve", "m", "--kv-cache-dtype", "fp8"]))
    assert fp8.kv_cache_dtype == "fp8" and fp8.cuda_graph_sizes is None and not fp8.enforce_eager
