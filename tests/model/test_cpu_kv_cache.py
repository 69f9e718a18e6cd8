"""The CPU KV cache: sized from what max_num_seqs full-length sequences need, capped by available memory,
and allocated so that pages never written are not resident (yet read as zeros, never NaN)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from kvserve.config import EngineConfig
from kvserve.model import cpu_kv_cache
from kvserve.model.cpu_kv_cache import cpu_kv_cache_budget, zeros_on_demand

MiB = 1 << 20
GiB = 1 << 30
BLOCK_BYTES = MiB
MODEL = SimpleNamespace(max_position_embeddings=4096)  # the one field the sizing reads


def test_budget_is_the_need_of_max_num_seqs_full_sequences(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kv_cache, "available_memory", lambda: 1 << 40)
    config = EngineConfig(model="m", max_num_seqs=3, max_model_len=100, block_size=16)
    assert cpu_kv_cache_budget(config, MODEL, BLOCK_BYTES) == 3 * 7 * BLOCK_BYTES  # ceil(100 / 16) = 7 blocks
    config = EngineConfig(model="m", max_num_seqs=2, block_size=16)  # the model's own context
    assert cpu_kv_cache_budget(config, MODEL, BLOCK_BYTES) == 2 * 256 * BLOCK_BYTES


def test_budget_is_capped_by_available_memory_and_overridden_by_the_flag(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kv_cache, "available_memory", lambda: 400 * MiB)
    config = EngineConfig(model="m", max_num_seqs=256, block_size=16)
    assert cpu_kv_cache_budget(config, MODEL, BLOCK_BYTES) == 100 * MiB
    config = EngineConfig(model="m", max_num_seqs=256, block_size=16, kv_cache_memory=3 * MiB)
    assert cpu_kv_cache_budget(config, MODEL, BLOCK_BYTES) == 3 * MiB


def _resident_bytes(tensor: torch.Tensor) -> int:
    """Resident bytes of the memory mappings that hold `tensor` (the kernel may split one allocation into
    several), not the process's RSS, which also grows when torch first touches a kernel's code pages."""
    first, last = tensor.data_ptr(), tensor.data_ptr() + tensor.nbytes
    resident, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range, perms, offset, dev, inode[, path]
            start, end = (int(part, 16) for part in fields[0].split("-"))
            inside = start < last and first < end
        elif fields[0] == "Rss:" and inside:
            resident += int(fields[1]) * 1024
    return resident


def test_untouched_pages_are_not_resident_and_read_as_zero() -> None:
    cache = zeros_on_demand((2, 1024, 16, 8, 64), torch.bfloat16)  # 32 MiB, its own mapping
    assert cache.shape == (2, 1024, 16, 8, 64) and cache.dtype == torch.bfloat16
    assert cache.data_ptr() % 4096 == 0  # rows start on cache lines (calloc alone gives 16 bytes past a page)
    assert _resident_bytes(cache) == 0
    cache[0, 3].fill_(1.0)  # one block (16 KiB, page-aligned) written: its 4 KiB pages only, no huge page
    assert _resident_bytes(cache) == 16 << 10
    assert float(cache[1, 1000].abs().sum()) == 0.0 and not torch.isnan(cache).any()


def test_the_memory_cap_sees_a_container_limit(tmp_path) -> None:
    """cgroup v2 and v1 layouts: the least headroom over the process's cgroup and its ancestors counts."""
    v2 = tmp_path / "v2"
    (v2 / "a" / "b").mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.current").write_text("0\n")
    (v2 / "a" / "memory.max").write_text(f"{3 * GiB}\n")
    (v2 / "a" / "memory.current").write_text(f"{1 * GiB}\n")
    (v2 / "a" / "b" / "memory.max").write_text("max\n")
    (v2 / "a" / "b" / "memory.current").write_text(f"{1 * GiB}\n")
    proc = tmp_path / "cgroup-v2"
    proc.write_text("0::/a/b\n")
    assert cpu_kv_cache.cgroup_memory_headroom(proc, v2) == 2 * GiB

    v1 = tmp_path / "v1"
    (v1 / "memory" / "job").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("0\n")
    (v1 / "memory" / "job" / "memory.limit_in_bytes").write_text(f"{1 * GiB}\n")
    (v1 / "memory" / "job" / "memory.usage_in_bytes").write_text(f"{256 * MiB}\n")
    proc.write_text("5:cpu,cpuacct:/\n4:memory:/job\n")
    assert cpu_kv_cache.cgroup_memory_headroom(proc, v1) == 768 * MiB
    proc.write_text("4:memory:/\n")  # a container's own view: unlimited at its root
    assert cpu_kv_cache.cgroup_memory_headroom(proc, v1) is None
    assert cpu_kv_cache.cgroup_memory_headroom(tmp_path / "absent", v1) is None


def test_a_half_precision_cache_holds_twice_the_tokens(tiny_model_dir) -> None:
    """--kv-cache-dtype float16/bfloat16 under a float32 model: the cache is stored in that type (the kernels
    are checked against the reference for each in tests/ops), and the same --kv-cache-memory holds twice the
    blocks."""
    from kvserve.engine.async_engine import load_model_config
    from kvserve.model.runner import ModelRunner

    model_dir = tiny_model_dir("llama")
    model_config = load_model_config(EngineConfig(model=str(model_dir)), model_dir)
    runners = {}
    for dtype in ("auto", "float16", "bfloat16"):
        config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, kv_cache_dtype=dtype)
        runners[dtype] = ModelRunner(config, model_config, model_dir)
    assert runners["auto"].kv_cache_dtype is torch.float32
    assert runners["float16"].kv_caches[0].dtype is torch.float16
    assert runners["bfloat16"].kv_caches[0].dtype is torch.bfloat16
    assert runners["float16"].num_blocks == runners["bfloat16"].num_blocks == 2 * runners["auto"].num_blocks
