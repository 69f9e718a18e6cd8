"""--cpu-threads: the size of torch's one intra-op pool, set on the runner thread that runs every torch op."""

from __future__ import annotations

import os

import pytest
import torch

from kvserve.actors.runner import runner_thread
from kvserve.cli import build_parser, engine_config_from_args
from kvserve.config import EngineConfig


def pool_size_on(thread) -> int:
    try:
        return thread.submit(torch.get_num_threads).result()
    finally:
        thread.shutdown()


def test_the_runner_thread_sizes_torchs_pool() -> None:
    before = torch.get_num_threads()
    assert pool_size_on(runner_thread(3)) == 3
    assert pool_size_on(runner_thread()) == len(os.sched_getaffinity(0))
    torch.set_num_threads(before)  # the pool is process-wide: leave it as the other tests found it


def test_the_flag_reaches_the_engine_config() -> None:
    args = build_parser().parse_args(["serve", "some-model", "--cpu-threads", "4"])
    assert engine_config_from_args(args).cpu_threads == 4
    assert engine_config_from_args(build_parser().parse_args(["serve", "some-model"])).cpu_threads is None
    with pytest.raises(ValueError, match="cpu_threads"):
        EngineConfig(model="m", cpu_threads=0)
