"""The KV cache on CPU: sized from what the configured batch can use, allocated so untouched pages cost nothing.

Size: `--max-num-seqs` sequences of the full context (`--max-model-len`, default the model's), capped at
`CPU_KV_CACHE_FRACTION` of the memory available when the server starts (within its container's memory limit);
`--kv-cache-memory` overrides both.
A block's bytes follow `--kv-cache-dtype` (runner.kv_block_bytes): a float16 or bfloat16 cache under a float32
model needs half the bytes of `auto`'s float32 for the same tokens, and the same budget holds twice the blocks.

Residency: torch.zeros writes every byte (its allocator does not know fresh pages are zero), so a 4 GiB
cache is 4 GiB resident from the start. The cache is its own anonymous mapping instead: pages stay unmapped
zero pages until a block is first written. Padded attention rows may still read never-written slots; those
read the kernel's zero page, never NaN.

Layout in memory (measured with bench_throughput's bfloat16 model, RESULTS.md #14): the mapping starts on a
page, so cached rows start on cache lines (calloc's large blocks start 16 bytes past a page, which put every
row across one more line and doubled decode attention's time over a cache in DRAM); and it opts out of
transparent huge pages, so a block's first write faults in 4 KiB, not 2 MiB (a huge page fault with memory
compaction took up to 10 ms, ~0.15 s of that run; small pages: ~2 µs each).
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path

import torch

from kvserve.config import EngineConfig
from kvserve.model.model_config import ModelConfig

# Share of the available memory the default-sized cache may take.
CPU_KV_CACHE_FRACTION = 0.25


def available_memory() -> int:
    """Bytes the kernel could give this process now: MemAvailable, within the headroom of the memory cgroup the
    process runs in (a container's limit), or physical memory where /proc is absent."""
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    headroom = cgroup_memory_headroom()
    return free if headroom is None else min(free, headroom)


_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_memory_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT) -> int | None:
    """The least limit-minus-usage over this process's memory cgroup and its ancestors (v2 memory.max/current,
    v1 memory.limit_in_bytes/usage_in_bytes); None when none of them is limited or readable. A container sees
    its own cgroup as the root of the mount."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    headrooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # the v2 unified hierarchy
            mount, limit_file, usage_file = root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            mount, limit_file, usage_file = root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        leaf = mount / path.lstrip("/")
        for directory in (leaf, *leaf.parents):
            headroom = _headroom(directory, limit_file, usage_file)
            if headroom is not None:
                headrooms.append(headroom)
            if directory == mount:
                break
    return min(headrooms) if headrooms else None


def _headroom(directory: Path, limit_file: str, usage_file: str) -> int | None:
    try:
        limit = (directory / limit_file).read_text().strip()
        usage = int((directory / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit == "max" or int(limit) >= 1 << 62:  # unlimited (v1 writes a page-rounded 2^63)
        return None
    return max(0, int(limit) - usage)


def cpu_kv_cache_budget(config: EngineConfig, model_config: ModelConfig, block_bytes: int) -> int:
    """Bytes for the CPU KV cache: what max_num_seqs full-length sequences need, within the memory cap."""
    if config.kv_cache_memory is not None:
        return config.kv_cache_memory
    context = config.max_model_len or model_config.max_position_embeddings
    blocks_per_seq = -(-context // config.block_size)
    need = config.max_num_seqs * blocks_per_seq * block_bytes
    return min(need, int(CPU_KV_CACHE_FRACTION * available_memory()))


def zeros_on_demand(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zeroed, page-aligned CPU tensor in small pages, resident only where written (see the module's
    docstring). The tensor keeps its mapping alive."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    region = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(region, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)
