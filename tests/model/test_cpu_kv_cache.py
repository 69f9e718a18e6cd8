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


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_untouched_pages_are_not_resident_and_read_as_zero() -> None:
    before = _rss_bytes()
    cache = zeros_on_demand((2, 1024, 16, 8, 64), torch.bfloat16)  # 32 MiB
    assert cache.shape == (2, 1024, 16, 8, 64) and cache.dtype == torch.bfloat16
    assert _rss_bytes() - before < 4 * MiB
    cache[0, 3].fill_(1.0)  # one block written: its pages only
    assert _rss_bytes() - before < 4 * MiB
    assert float(cache[1, 1000].abs().sum()) == 0.0 and not torch.isnan(cache).any()
