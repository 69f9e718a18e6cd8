"""Engine settings (the subset of vLLM's engine arguments kvserve implements), validated on creation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

GiB = 1 << 30
ASYNC_SCHEDULING_ENV = "KVSERVE_ASYNC_SCHEDULING"
# --kv-cache-dtype (model/memory_planning.py resolve_kv_cache_dtype says which the device takes).
KV_CACHE_DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16", "fp8")


def default_async_scheduling() -> bool:
    """On, unless KVSERVE_ASYNC_SCHEDULING=0 (CI runs the engine and API suites both ways)."""
    value = os.environ.get(ASYNC_SCHEDULING_ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ASYNC_SCHEDULING_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str
    tokenizer: str | None = None  # directory; defaults to the model's
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda[:N]
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes of KV cache; default: sized from need on CPU, from memory on CUDA
    gpu_memory_utilization: float = 0.9
    # auto (the model's dtype) | float32 | float16 | bfloat16 (CPU: any; CUDA: the model's) | fp8 (refused until
    # the kernels read fp8 caches)
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False  # True: no CUDA graphs for decode batches
    cuda_graph_sizes: tuple[int, ...] | None = None  # decode batch sizes to capture; None: 1, 2, 4, 8, 16, 24, ...
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None  # default 2048 on CPU, 8192 on CUDA
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    scheduling_policy: str = "fcfs"  # fcfs | priority
    seed: int = 0
    generation_config: str = "auto"  # auto (the model's) | vllm (none) | a directory
    load_format: str = "auto"  # auto (the checkpoint) | dummy (random weights) | noop (no forward at all)
    enable_sleep_mode: bool = False  # the engine may be put to sleep (its KV cache and weights released)
    runner: str = "auto"  # auto (from the model) | generate | pooling (embeddings, classification, scores)
    # Reliability: None means no limit.
    max_num_queued_requests: int | None = None  # requests waiting to be scheduled; more are refused (503)
    max_num_queued_tokens: int | None = None  # prompt tokens waiting to be scheduled; beyond, refused (503)
    request_timeout: float | None = None  # seconds a request may take, queue included; then it is aborted
    engine_step_timeout: float | None = 300.0  # seconds a step may run before the watchdog kills the engine
    quantization: str | None = None  # None (the checkpoint's own) | fp8 (quantize the weights at load time)
    tensor_parallel_size: int = 1  # >1: that many worker processes, one rank each (NCCL on GPUs, gloo on CPU)
    pipeline_parallel_size: int = 1  # only 1: pipeline parallelism is not implemented
    # Schedule step N+1 while step N executes (its sampled tokens fed to N+1 on the device).
    async_scheduling: bool = field(default_factory=default_async_scheduling)
    cpu_threads: int | None = None  # torch's intra-op threads on the runner thread; None: the affinity mask

    def __post_init__(self) -> None:
        if self.block_size not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise ValueError(f"block_size must be a power of two up to 128, got {self.block_size}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be at least 2, got {self.max_model_len}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {self.kv_cache_memory}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPE_CHOICES:
            raise ValueError(
                f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPE_CHOICES)}, got {self.kv_cache_dtype!r}"
            )
        if self.cuda_graph_sizes is not None and not all(size >= 1 for size in self.cuda_graph_sizes):
            raise ValueError(f"cuda_graph_sizes must be positive batch sizes, got {list(self.cuda_graph_sizes)}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be positive, got {self.cpu_threads}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be positive, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be positive, got {self.max_num_batched_tokens}")
        if self.load_format not in ("auto", "dummy", "noop"):
            raise ValueError(f"load_format must be 'auto', 'dummy' or 'noop', got {self.load_format!r}")
        if self.runner not in ("auto", "generate", "pooling"):
            raise ValueError(f"runner must be 'auto', 'generate' or 'pooling', got {self.runner!r}")
        for name in ("max_num_queued_requests", "max_num_queued_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("request_timeout", "engine_step_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.quantization not in (None, "fp8"):
            raise ValueError(f"quantization must be 'fp8' (or unset), got {self.quantization!r}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be positive, got {self.tensor_parallel_size}")
        if self.pipeline_parallel_size != 1:
            raise ValueError(
                f"pipeline_parallel_size {self.pipeline_parallel_size} is not supported: kvserve has no pipeline "
                "parallelism; split the model with --tensor-parallel-size instead"
            )
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"scheduling_policy must be 'fcfs' or 'priority', got {self.scheduling_policy!r}")
