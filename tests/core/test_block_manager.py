"""Exact block-level state: allocation order, free-queue order, ref counts, prefix hits and their caps."""

from __future__ import annotations

from kvserve import _core

from .helpers import make_scheduler, step


def params(**kw) -> _core.RequestParams:
    return _core.RequestParams(**kw)


def test_blocks_come_from_the_head_and_return_tails_first(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=2))
    out, _ = step(scheduler)
    assert out.block_tables.tolist() == [[0, 1, 2]]
    assert out.slot_mapping.tolist() == list(range(10))
    pool = scheduler.block_pool
    assert pool.free_block_ids() == [3, 4, 5, 6, 7, 8, 9]
    assert [pool.ref_count(b) for b in range(4)] == [1, 1, 1, 0]
    # Blocks 0 and 1 are full and registered; block 2 holds 2 of 4 tokens.
    assert pool.block_hash(0) is not None and pool.block_hash(1) is not None and pool.block_hash(2) is None

    _, update = step(scheduler)
    assert update.finish_reasons.tolist() == [int(_core.FinishReason.LENGTH)]
    # Freed last-first: the partial block 2 goes to the head (nothing to keep), cached 1 then 0 to the tail.
    assert pool.free_block_ids() == [2, 3, 4, 5, 6, 7, 8, 9, 1, 0]
    assert pool.num_cached_blocks == 2
    assert not scheduler.has_unfinished


def test_prefix_hit_reuses_cached_blocks_and_counts_them(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=2))
    step(scheduler)
    step(scheduler)
    scheduler.add_request("b", list(range(8)) + [50, 51], params(max_tokens=1))
    out, update = step(scheduler)
    assert out.block_tables.tolist() == [[0, 1, 2]]
    assert out.input_ids.tolist() == [50, 51]
    assert out.positions.tolist() == [8, 9]
    assert out.slot_mapping.tolist() == [8, 9]
    assert out.seq_lens.tolist() == [10]
    assert update.num_cached_tokens.tolist() == [8]
    stats = scheduler.block_pool.stats
    assert (stats.num_requests, stats.num_query_tokens, stats.num_hit_tokens) == (2, 20, 8)


def test_hit_is_capped_so_the_last_prompt_token_is_recomputed(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=1))
    step(scheduler)
    # 8 tokens = exactly the two cached blocks; only the first may hit.
    scheduler.add_request("b", list(range(8)), params(max_tokens=5))
    out, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [4]
    assert out.input_ids.tolist() == [4, 5, 6, 7]
    state = scheduler.request_state("b")
    assert state.block_ids[0] == 0 and state.num_computed_tokens == 8
    # The recomputed second block duplicates cached block 1: the first copy stays the registered one.
    assert scheduler.block_pool.block_hash(state.block_ids[1]) is None
    assert scheduler.block_pool.block_hash(1) is not None


def test_shared_blocks_are_ref_counted(scheduler):
    scheduler.add_request("a", list(range(9)), params(max_tokens=4))
    step(scheduler)
    scheduler.add_request("b", list(range(8)) + [77], params(max_tokens=4))
    step(scheduler)
    a, b = scheduler.request_state("a"), scheduler.request_state("b")
    assert a.block_ids[:2] == b.block_ids[:2] == [0, 1]
    assert a.block_ids[2] != b.block_ids[2]
    assert [scheduler.block_pool.ref_count(i) for i in (0, 1)] == [2, 2]
    scheduler.abort("a")
    assert [scheduler.block_pool.ref_count(i) for i in (0, 1)] == [1, 1]
    scheduler.check_invariants()


def test_cache_salt_separates_requests(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=1))
    step(scheduler)
    scheduler.add_request("b", list(range(10)), params(max_tokens=1, cache_salt="tenant-2"))
    _, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [0]
    scheduler.add_request("c", list(range(10)), params(max_tokens=1, cache_salt="tenant-2"))
    _, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [8]


def test_skip_prefix_cache_computes_everything_but_still_registers(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=1))
    step(scheduler)
    scheduler.add_request("b", list(range(10)), params(max_tokens=1, skip_prefix_cache=True))
    out, update = step(scheduler)
    assert out.input_ids.tolist() == list(range(10))
    assert update.num_cached_tokens.tolist() == [0]
    assert scheduler.block_pool.stats.num_requests == 1  # b did not query
    scheduler.add_request("c", list(range(10)), params(max_tokens=1))
    _, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [8]


def test_lazy_eviction_drops_registrations_only_on_reuse():
    scheduler = make_scheduler(num_blocks=3, block_size=2)
    scheduler.add_request("a", [1, 2, 3, 4, 5], params(max_tokens=1))
    step(scheduler)
    pool = scheduler.block_pool
    assert pool.free_block_ids() == [2, 1, 0] and pool.num_cached_blocks == 2
    # A 3-block request takes the partial block first, then evicts 1 (the chain tail), then 0.
    scheduler.add_request("b", [9, 9, 9, 9, 9], params(max_tokens=1))
    out, _ = step(scheduler)
    assert out.block_tables.tolist() == [[2, 1, 0]]
    assert pool.num_cached_blocks == 2  # b's own two full blocks now
    scheduler.add_request("c", [1, 2, 3, 4, 5], params(max_tokens=1))
    _, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [0]


def test_prefix_caching_disabled_never_hits():
    scheduler = make_scheduler(enable_prefix_caching=False)
    for rid in ("a", "b"):
        scheduler.add_request(rid, list(range(10)), params(max_tokens=1))
        _, update = step(scheduler)
        assert update.num_cached_tokens.tolist() == [0]
    assert scheduler.block_pool.num_cached_blocks == 0
    assert scheduler.block_pool.stats.num_requests == 0


def test_reset_prefix_cache_only_when_idle(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=2))
    step(scheduler)
    assert scheduler.reset_prefix_cache() is False
    step(scheduler)
    assert scheduler.reset_prefix_cache() is True
    assert scheduler.block_pool.num_cached_blocks == 0
    scheduler.add_request("b", list(range(10)), params(max_tokens=1))
    _, update = step(scheduler)
    assert update.num_cached_tokens.tolist() == [0]


def test_usage_counts_used_blocks(scheduler):
    assert scheduler.block_pool.usage == 0.0
    scheduler.add_request("a", list(range(10)), params(max_tokens=3))
    step(scheduler)
    assert scheduler.block_pool.usage == 0.3
