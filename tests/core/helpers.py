"""Shared helpers for driving the C++ scheduler in tests."""

from __future__ import annotations

import numpy as np

from kvserve import _core


def make_scheduler(**overrides) -> _core.Scheduler:
    kwargs = dict(num_blocks=10, block_size=4, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=64)
    kwargs.update(overrides)
    return _core.Scheduler(_core.SchedulerConfig(**kwargs))


def step(scheduler: _core.Scheduler, tokens: list[int] | None = None):
    """One schedule + update; each sampled row gets the next of `tokens` (default 100, 101, ...)."""
    out = scheduler.schedule()
    num_samples = len(out.sample_handles)
    sampled = tokens if tokens is not None else list(range(100, 100 + num_samples))
    update = scheduler.update(np.asarray(sampled, dtype=np.int32))
    scheduler.check_invariants()
    return out, update
