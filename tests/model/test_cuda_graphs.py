"""CUDA-graph dispatch on the CPU: which sizes are captured, which steps replay, and that a padded batch
computes the real rows exactly as the unpadded one does (the graph replays that same padded forward)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.cuda_graphs import MAX_GRAPH_SEQ_LEN, DecodeGraphs, capture_sizes, is_decode_only, padded_size
from kvserve.model.model_config import ModelConfig
from kvserve.model.runner import ModelRunner
from kvserve.sampling_params import SamplingParams
from tests.model.batches import RunnerDriver, prepared

MiB = 1 << 20
GREEDY = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)


def test_default_sizes_follow_max_num_seqs():
    assert capture_sizes(256) == [1, 2, 4, 8, *range(16, 257, 8)]
    assert capture_sizes(100)[-3:] == [88, 96, 100]  # max_num_seqs itself, so every decode batch has a graph
    assert capture_sizes(3) == [1, 2, 3]
    assert capture_sizes(1024)[-1] == 512
    assert capture_sizes(64, requested=[32, 1, 128, 8]) == [1, 8, 32]


def test_a_batch_pads_to_the_next_captured_size():
    sizes = capture_sizes(64)
    assert [padded_size(sizes, n) for n in (1, 3, 5, 9, 16, 17, 64)] == [1, 4, 8, 16, 16, 24, 64]
    assert padded_size(sizes, 65) is None


def driver_with_decoding_requests(model_dir, num_requests: int) -> RunnerDriver:
    config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, block_size=4, dtype="float32")
    driver = RunnerDriver(
        ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir), max_blocks_per_request=8
    )
    rng = np.random.default_rng(3)
    for slot in range(num_requests):
        driver.add(slot, prepared(f"r{slot}", rng.integers(3, 384, 5 + 3 * slot).tolist(), GREEDY))
    driver.step()  # the prompts
    driver.step()  # one decode
    return driver


def next_decode_batch(driver: RunnerDriver):
    for row in driver.rows.values():
        row.num_computed, row.num_new, row.new = len(row.token_ids) - 1, 1, None
    return driver.builder.build(list(driver.rows.values()))


def graphs_for(runner: ModelRunner, sizes: list[int]) -> DecodeGraphs:
    return DecodeGraphs(
        sizes, max_model_len=128, block_size=4, dummy_block=runner.num_blocks - 1, kv_caches=runner.kv_caches,
        device=runner.device,
    )  # fmt: skip


def test_only_decode_only_steps_within_the_captured_bounds_replay(tiny_model_dir):
    driver = driver_with_decoding_requests(tiny_model_dir("llama"), 3)
    graphs = graphs_for(driver.runner, [1, 2, 4])
    decode = next_decode_batch(driver)
    assert is_decode_only(decode) and graphs.size_for(decode) == 4
    assert graphs_for(driver.runner, [1, 2]).size_for(decode) is None  # larger than every graph
    assert graphs.size_for(dataclasses.replace(decode, max_seq_len=129)) is None  # longer than captured
    prefill_driver = RunnerDriver(driver.runner)
    prefill_driver.add(5, prepared("p", [3, 4, 5], GREEDY))
    prefill_driver.rows = dict(driver.rows)
    mixed = prefill_driver.builder.build([*driver.rows.values(), *prefill_driver.pending])
    assert not is_decode_only(mixed) and graphs.size_for(mixed) is None
    pooled = dataclasses.replace(decode, pool_handles=np.array([0], np.int64))
    assert not is_decode_only(pooled)
    # The CPU never captures: the runner's steps run eagerly.
    assert driver.runner.cuda_graphs is None and driver.runner.prepare_inputs(decode).graph_size is None


def test_the_padded_batch_computes_the_real_rows_and_writes_padding_to_the_dummy_block(tiny_model_dir):
    driver = driver_with_decoding_requests(tiny_model_dir("llama"), 3)
    runner = driver.runner
    graphs = graphs_for(runner, [1, 2, 4, 8])
    batch = next_decode_batch(driver)
    inputs = runner.prepare_inputs(batch)
    with torch.inference_mode():
        eager = runner.model(inputs.input_ids, inputs.positions, inputs.ctx)
        caches_after_eager = [cache.clone() for cache in runner.kv_caches]
        size = graphs.size_for(batch)
        assert size == 4
        graphs.fill(inputs.input_ids, inputs.positions, inputs.ctx, size)
        padded = runner.model(*graphs.static_inputs(size))
    assert padded.shape[0] == 4
    torch.testing.assert_close(padded[:3], eager, rtol=1e-5, atol=1e-5)
    dummy = graphs.dummy_block
    for before, after in zip(caches_after_eager, runner.kv_caches):
        # The real rows rewrote their own slots with the same keys and values; padding touched the dummy block.
        torch.testing.assert_close(after[:, :dummy], before[:, :dummy], rtol=1e-5, atol=1e-5)
        assert not torch.equal(after[:, dummy, 0], before[:, dummy, 0])
    # A smaller step after a larger one: stale rows past it are re-padded.
    graphs.fill(inputs.input_ids[:1], inputs.positions[:1], _first_row(inputs.ctx), 2)
    assert graphs.slot_mapping[1].item() == graphs.dummy_slot and graphs.seq_lens[1].item() == 1
    assert graphs.block_tables[1].tolist() == [dummy] * graphs.max_blocks_per_seq


def _first_row(ctx):
    return dataclasses.replace(
        ctx, slot_mapping=ctx.slot_mapping[:1], block_tables=ctx.block_tables[:1], seq_lens=ctx.seq_lens[:1]
    )


def test_long_contexts_cap_the_captured_attention_bound():
    graphs = DecodeGraphs(
        [1], max_model_len=131072, block_size=16, dummy_block=0, kv_caches=[], device=torch.device("cpu")
    )
    assert graphs.max_seq_len == MAX_GRAPH_SEQ_LEN and graphs.static_inputs(1)[2].max_seq_len == MAX_GRAPH_SEQ_LEN


def test_sizes_must_be_positive_and_the_cpu_captures_nothing(tiny_model_dir):
    with pytest.raises(ValueError, match="cuda_graph_sizes must be positive"):
        EngineConfig(model="m", cuda_graph_sizes=(0, 8))
    model_dir = tiny_model_dir("llama")
    config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, cuda_graph_sizes=(1, 2))
    runner = ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir)
    assert runner.graph_sizes == [] and runner.num_reserved_blocks == 0
