"""Sizing the paged KV cache: what is left of the device's memory once everything else has taken its share.

On CUDA the runner loads the weights, runs one profiling forward at the step's largest size
(`max_num_batched_tokens` tokens over up to `max_num_seqs` sequences, then the sampler's logits on
`max_num_seqs` rows) and reads the allocator's peak; `plan_kv_cache` then does the arithmetic:

    | util x total                                                                      |
    | weights | peak activations | non-torch (CUDA context, NCCL, ...) | CUDA graphs | KV cache |

`--kv-cache-memory` replaces the arithmetic with a fixed size. The planning is a pure function of the numbers
measured (`MemoryProfile`), so the CPU tests drive it with fake ones; `profile_memory` is the CUDA measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig
from kvserve.model.parallel import local_kv_heads

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    """Bytes measured on the device after loading the weights and one profiling step."""

    total: int  # the device's memory
    weights: int  # tensors alive after loading (weights, buffers, RoPE tables)
    peak_activations: int  # the profiling step's peak above `weights`
    non_torch: int  # used on the device outside torch's allocator: the CUDA context, cuBLAS workspaces, ...
    cuda_graphs: int  # estimated private pool of the decode CUDA graphs (0 when none are captured)


@dataclass(frozen=True, slots=True)
class KVCachePlan:
    num_blocks: int
    budget: int  # bytes given to the KV cache (num_blocks * block_bytes <= budget)
    tokens_per_request: int  # max_model_len
    max_concurrency: float  # requests of max_model_len tokens the cache holds at once

    def describe(self, block_size: int) -> str:
        return (
            f"KV cache: {self.num_blocks} blocks of {block_size} tokens ({self.budget / GiB:.2f} GiB); "
            f"maximum concurrency for {self.tokens_per_request} tokens per request: {self.max_concurrency:.1f}x"
        )


class ModelDoesNotFitError(ValueError):
    """Raised at start: the model, its activations and one max_model_len request do not fit the device."""


def blocks_per_request(max_model_len: int, block_size: int) -> int:
    return -(-max_model_len // block_size)


def plan_kv_cache(
    *,
    block_bytes: int,
    block_size: int,
    max_model_len: int,
    kv_cache_memory: int | None = None,
    profile: MemoryProfile | None = None,
    gpu_memory_utilization: float = 0.9,
    require_max_model_len: bool = True,
) -> KVCachePlan:
    """The KV cache's blocks: from `kv_cache_memory` when given, else from the measured `profile`.

    A budget planned from a profile must hold one request of max_model_len tokens when
    `require_max_model_len` (--max-model-len was given; the model's own limit is capped to the cache by the
    engine instead); an explicit `kv_cache_memory` is the user's choice and needs only one block.
    """
    if kv_cache_memory is not None:
        budget = kv_cache_memory
    elif profile is not None:
        budget = _budget_from_profile(profile, gpu_memory_utilization)
    else:
        raise ValueError("plan_kv_cache needs kv_cache_memory or a memory profile")
    num_blocks = max(0, budget // block_bytes)
    per_request = blocks_per_request(max_model_len, block_size)
    if num_blocks < 1:
        raise ModelDoesNotFitError(
            f"no room for the KV cache: one block of {block_size} tokens takes {_fmt(block_bytes)}, "
            f"{_fmt(budget)} is available; raise --kv-cache-memory"
            + ("" if kv_cache_memory is not None else " or --gpu-memory-utilization, or lower --max-num-batched-tokens")
        )
    if profile is not None and kv_cache_memory is None and require_max_model_len and num_blocks < per_request:
        raise ModelDoesNotFitError(
            f"the KV cache has room for {num_blocks * block_size} tokens ({num_blocks} blocks, {_fmt(budget)}), "
            f"fewer than one request of --max-model-len {max_model_len} needs ({per_request} blocks, "
            f"{_fmt(per_request * block_bytes)}); {_breakdown(profile, gpu_memory_utilization)}. Lower "
            f"--max-model-len, raise --gpu-memory-utilization, lower --max-num-batched-tokens or --max-num-seqs, "
            f"or pass --enforce-eager (no CUDA graphs)"
        )
    return KVCachePlan(num_blocks, budget, max_model_len, num_blocks / per_request)


def _budget_from_profile(profile: MemoryProfile, utilization: float) -> int:
    allowed = int(utilization * profile.total)
    if profile.weights > allowed:
        raise ModelDoesNotFitError(
            f"the weights take {_fmt(profile.weights)}, more than --gpu-memory-utilization {utilization} of the "
            f"device's {_fmt(profile.total)} ({_fmt(allowed)}); raise --gpu-memory-utilization, quantize the "
            f"weights (--quantization fp8) or use a device with more memory"
        )
    budget = allowed - profile.weights - profile.peak_activations - profile.non_torch - profile.cuda_graphs
    if budget <= 0:
        raise ModelDoesNotFitError(
            f"no memory left for the KV cache: {_breakdown(profile, utilization)}. Raise "
            f"--gpu-memory-utilization, lower --max-num-batched-tokens or --max-num-seqs, or pass --enforce-eager"
        )
    return budget


def _breakdown(profile: MemoryProfile, utilization: float) -> str:
    return (
        f"{utilization} x {_fmt(profile.total)} = {_fmt(int(utilization * profile.total))} of which weights "
        f"{_fmt(profile.weights)}, peak activations {_fmt(profile.peak_activations)}, non-torch "
        f"{_fmt(profile.non_torch)}, CUDA graphs (estimate) {_fmt(profile.cuda_graphs)}"
    )


def _fmt(num_bytes: int) -> str:
    return f"{num_bytes / GiB:.2f} GiB"


def cuda_graph_pool_estimate(peak_activations: int, max_step_tokens: int, largest_graph: int) -> int:
    """The decode graphs share one private pool, as large as the largest graph's activations: the profiled
    peak scaled from the step's token count to the largest captured batch, plus room for the attention
    workspaces and cuBLAS, which do not scale with tokens (the runner logs the measured pool after capture)."""
    if largest_graph == 0:
        return 0
    return int(peak_activations * min(1.0, largest_graph / max_step_tokens)) + 256 * MiB


# --kv-cache-dtype values that name a storage type (vLLM's `bfloat16`, and llama.cpp's f16/f32 cache types).
KV_CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_kv_cache_dtype(requested: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """--kv-cache-dtype: `auto` stores keys and values in the model's dtype (vLLM's meaning).

    On CPU, float32, float16 and bfloat16 caches are each read and written by the attention kernels (float32
    math: values are rounded once when written, widened when read), whatever the model's dtype: a float16
    cache halves a float32 model's KV memory. The CUDA kernels store the cache in the model's dtype only.
    fp8 (float8_e4m3fn with per-tensor scales) is refused: neither the CUDA kernels (csrc/kernels/cache.cu,
    attention.cu) nor the CPU kernels read an fp8 cache."""
    if requested == "auto":
        return model_dtype
    where = "the CPU kernels" if device.type == "cpu" else "the CUDA kernels (csrc/kernels/cache.cu, attention.cu)"
    dtype = KV_CACHE_DTYPES.get(requested)
    if dtype is None:
        raise ValueError(
            f"--kv-cache-dtype {requested} is not supported: {where} read float32/float16/bfloat16 KV caches only; "
            f"use --kv-cache-dtype auto, float16 or bfloat16"
        )
    if device.type != "cpu" and dtype != model_dtype:
        raise ValueError(
            f"--kv-cache-dtype {requested} is not supported with a {str(model_dtype).removeprefix('torch.')} model "
            f"on {device.type}: {where} store keys and values in the model's dtype; use --kv-cache-dtype auto"
        )
    return dtype


def profile_memory(
    device: torch.device,
    run_profile_step: Callable[[], None],
    cuda_graph_estimate: Callable[[int], int],
) -> MemoryProfile:
    """CUDA: measures the weights (what is allocated now), the peak of `run_profile_step` above them and the
    device memory used outside torch's allocator (the CUDA context, cuBLAS/NCCL buffers)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    weights = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_profile_step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    free, total = torch.cuda.mem_get_info(device)
    # What the process holds beyond torch's reserved segments; measured before empty_cache, while the
    # reserved segments are still counted on both sides.
    non_torch = max(0, (total - free) - torch.cuda.memory_reserved(device))
    torch.cuda.empty_cache()
    peak_activations = max(0, peak - weights)
    return MemoryProfile(total, weights, peak_activations, non_torch, cuda_graph_estimate(peak_activations))


def profiling_inputs(
    config: ModelConfig, num_tokens: int, num_seqs: int, block_size: int, kv_dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, ForwardContext]:
    """The largest step's model inputs: `num_tokens` prompt tokens over `num_seqs` fresh sequences (the
    last takes the remainder), with a one-block KV cache per layer that every token writes and every table
    reads (the real cache is sized from this step's peak, so it cannot exist yet)."""
    num_seqs = max(1, min(num_seqs, num_tokens))
    q_lens = torch.full((num_seqs,), num_tokens // num_seqs, dtype=torch.int32)
    q_lens[-1] += num_tokens - int(q_lens.sum())
    query_start_loc = torch.zeros(num_seqs + 1, dtype=torch.int32)
    query_start_loc[1:] = torch.cumsum(q_lens, 0)
    positions = torch.arange(num_tokens, dtype=torch.int32) - torch.repeat_interleave(query_start_loc[:-1], q_lens)
    width = blocks_per_request(int(q_lens.max()), block_size)
    cache_shape = (2, 1, block_size, local_kv_heads(config), config.head_dim)
    ctx = ForwardContext(
        slot_mapping=torch.zeros(num_tokens, dtype=torch.int64, device=device),
        block_tables=torch.zeros(num_seqs, width, dtype=torch.int32, device=device),
        seq_lens=q_lens.to(device),
        query_start_loc=query_start_loc.to(device),
        token_seq_lens=torch.repeat_interleave(q_lens, q_lens).to(device),
        max_query_len=int(q_lens.max()),
        max_seq_len=int(q_lens.max()),
        kv_caches=[torch.zeros(cache_shape, dtype=kv_dtype, device=device) for _ in range(config.num_hidden_layers)],
    )
    input_ids = torch.zeros(num_tokens, dtype=torch.int32, device=device)
    return input_ids, positions.to(device), ctx
