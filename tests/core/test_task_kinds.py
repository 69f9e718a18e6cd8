"""Exact state for the task kinds (prefill-only, encoder-decoder), batch slots and step stats."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core

from .helpers import make_scheduler, step

GENERATE = _core.TaskKind.GENERATE
PREFILL_ONLY = _core.TaskKind.PREFILL_ONLY
ENCODER_DECODER = _core.TaskKind.ENCODER_DECODER
NO_SAMPLES = np.array([], dtype=np.int32)


def params(**kw) -> _core.RequestParams:
    return _core.RequestParams(**kw)


def test_prefill_only_finishes_after_one_step_with_no_sampled_row(scheduler):
    scheduler.add_request("p", list(range(10)), params(max_tokens=0, task=PREFILL_ONLY))
    out = scheduler.schedule()
    assert out.block_tables.tolist() == [[0, 1, 2]]
    assert (out.pool_handles.tolist(), out.pool_req_indices.tolist(), out.pool_slots.tolist()) == ([0], [0], [0])
    assert (out.sample_handles.tolist(), out.logits_indices.tolist(), out.sample_slots.tolist()) == ([], [], [])
    assert out.query_start_loc.tolist() == [0, 10]  # the pooled rows

    update = scheduler.update(NO_SAMPLES)
    assert update.pooled_handles.tolist() == [0]
    assert len(update) == 0
    assert not scheduler.has_unfinished
    # Freed last-first: the partial block 2 to the head, the registered full blocks 1 and 0 to the tail.
    assert scheduler.block_pool.free_block_ids() == [2, 3, 4, 5, 6, 7, 8, 9, 1, 0]
    assert scheduler.block_pool.num_cached_blocks == 2
    scheduler.check_invariants()


def test_pooled_and_sampled_rows_of_one_step_are_listed_apart(scheduler):
    scheduler.add_request("g", [1, 2, 3], params(max_tokens=2))
    scheduler.add_request("p", [4, 5], params(task=PREFILL_ONLY))
    out = scheduler.schedule()
    assert (out.sample_handles.tolist(), out.logits_indices.tolist()) == ([0], [2])
    assert (out.pool_handles.tolist(), out.pool_req_indices.tolist()) == ([1], [1])
    update = scheduler.update(np.array([7], dtype=np.int32))
    assert (update.handles.tolist(), update.pooled_handles.tolist()) == ([0], [1])
    assert scheduler.num_running == 1


def test_prefill_only_aborted_in_flight_is_not_reported(scheduler):
    scheduler.add_request("p", [4, 5], params(task=PREFILL_ONLY))
    scheduler.schedule()
    scheduler.abort("p")
    assert scheduler.update(NO_SAMPLES).pooled_handles.tolist() == []
    scheduler.check_invariants()


def test_prefill_only_prompt_is_never_chunked():
    scheduler = make_scheduler(max_num_batched_tokens=8)
    scheduler.add_request("g", [1, 2, 3, 4, 5], params(max_tokens=3))
    scheduler.add_request("p", [6, 7, 8, 9, 10, 11], params(task=PREFILL_ONLY))
    out, _ = step(scheduler)  # 3 tokens of budget left: a generate prompt would be chunked, this one waits
    assert out.req_handles.tolist() == [0]
    assert scheduler.request_state("p").num_computed_tokens == 0
    out, update = step(scheduler)  # 1 decode token leaves 7: the whole prompt fits
    assert out.req_handles.tolist() == [0, 1]
    assert out.query_start_loc.tolist() == [0, 1, 7]
    assert update.pooled_handles.tolist() == [1]


def test_prefill_only_prompt_longer_than_the_token_budget_is_rejected():
    scheduler = make_scheduler(max_num_batched_tokens=8)
    with pytest.raises(ValueError, match=r"prefill-only prompt of 9 tokens exceeds max_num_batched_tokens \(8\)"):
        scheduler.add_request("p", list(range(9)), params(task=PREFILL_ONLY))
    scheduler.add_request("p", list(range(8)), params(task=PREFILL_ONLY))


def test_encoder_decoder_cross_blocks(scheduler):
    scheduler.add_request("e", [1, 2, 3, 4, 5], params(max_tokens=5, task=ENCODER_DECODER, num_encoder_tokens=6))
    out, _ = step(scheduler)
    # Self-attention blocks first, then ceil(6 / 4) fresh cross blocks.
    assert out.block_tables.tolist() == [[0, 1]]
    assert out.cross_block_tables.tolist() == [[2, 3]]
    assert out.cross_seq_lens.tolist() == [6]
    assert (out.encoder_handles.tolist(), out.encoder_req_indices.tolist()) == ([0], [0])
    assert out.cross_slot_mapping.tolist() == [8, 9, 10, 11, 12, 13]
    assert out.stats.num_encoder_tokens == 6
    assert scheduler.request_state("e").cross_block_ids == [2, 3]
    # Cross blocks never enter the prefix cache; nor do the decoder's (they depend on the encoder input).
    assert [scheduler.block_pool.block_hash(b) for b in range(4)] == [None] * 4

    out, _ = step(scheduler)  # decode: the encoder does not run again, the cross blocks stay
    assert (out.encoder_handles.tolist(), out.cross_slot_mapping.tolist()) == ([], [])
    assert out.cross_block_tables.tolist() == [[2, 3]]
    assert out.stats.num_encoder_tokens == 0


def test_cross_block_table_is_padded_for_other_kinds(scheduler):
    scheduler.add_request("g", [1, 2], params(max_tokens=2))
    scheduler.add_request("e", [3], params(max_tokens=2, task=ENCODER_DECODER, num_encoder_tokens=9))
    out = scheduler.schedule()
    assert out.cross_block_tables.tolist() == [[0, 0, 0], [2, 3, 4]]
    assert out.cross_seq_lens.tolist() == [0, 9]
    assert out.encoder_req_indices.tolist() == [1]


def test_encoder_budget_gates_admission():
    scheduler = make_scheduler(max_num_encoder_input_tokens=8)
    scheduler.add_request("e1", [1, 2], params(max_tokens=3, task=ENCODER_DECODER, num_encoder_tokens=6))
    scheduler.add_request("e2", [3, 4], params(max_tokens=3, task=ENCODER_DECODER, num_encoder_tokens=4))
    scheduler.add_request("g", [5, 6], params(max_tokens=3))
    out, _ = step(scheduler)  # 2 encoder tokens left: e2 waits, and g behind it (first come, first served)
    assert (out.req_handles.tolist(), out.encoder_handles.tolist()) == ([0], [0])
    assert scheduler.request_state("e2").cross_block_ids == []
    out, _ = step(scheduler)
    assert (out.req_handles.tolist(), out.encoder_handles.tolist()) == ([0, 1, 2], [1])
    assert out.stats.num_encoder_tokens == 4


def test_encoder_longer_than_its_budget_is_rejected():
    scheduler = make_scheduler(max_num_encoder_input_tokens=8)
    assert scheduler.config.max_num_encoder_input_tokens == 8
    with pytest.raises(ValueError, match=r"num_encoder_tokens \(9\) exceeds max_num_encoder_input_tokens \(8\)"):
        scheduler.add_request("e", [1], params(task=ENCODER_DECODER, num_encoder_tokens=9))
    # 0 means the token budget.
    assert make_scheduler(max_num_batched_tokens=48).config.max_num_encoder_input_tokens == 48


def test_cross_blocks_are_freed_on_preemption_and_taken_again_on_readmission():
    scheduler = make_scheduler(num_blocks=6, block_size=2, enable_prefix_caching=False)
    scheduler.add_request("a", [1, 2, 3], params(max_tokens=4))
    scheduler.add_request("b", [4, 5, 6], params(max_tokens=4, task=ENCODER_DECODER, num_encoder_tokens=2))
    out, _ = step(scheduler)
    assert out.block_tables.tolist() == [[0, 1], [2, 3]]
    assert out.cross_block_tables.tolist() == [[0], [4]]
    step(scheduler)
    out, _ = step(scheduler)  # a takes the last free block (5); b needs one too and is preempted
    assert (out.req_handles.tolist(), out.preempted_handles.tolist()) == ([0], [1])
    assert out.stats.num_preemptions == 1
    b = scheduler.request_state("b")
    assert (b.status, b.block_ids, b.cross_block_ids, b.slot) == (_core.RequestStatus.WAITING, [], [], 1)
    # Cross block 4 went back first, then b's blocks last-first: all to the head (nothing cached).
    assert scheduler.block_pool.free_block_ids() == [2, 3, 4]
    out, update = step(scheduler)  # b needs 3 blocks + 1 cross block, 3 are free: it keeps waiting
    assert (out.req_handles.tolist(), update.finish_reasons.tolist()) == ([0], [int(_core.FinishReason.LENGTH)])
    out, _ = step(scheduler)  # a is done: b is admitted again and its encoder runs again
    assert (out.req_handles.tolist(), out.encoder_handles.tolist(), out.req_slots.tolist()) == ([1], [1], [1])
    assert out.block_tables.tolist() == [[0, 1, 5]]
    assert out.cross_block_tables.tolist() == [[2]]
    assert out.cross_slot_mapping.tolist() == [4, 5]


def test_slots_are_reused_lowest_first(scheduler):
    for rid in "abc":
        scheduler.add_request(rid, [1], params(max_tokens=3))
    assert [scheduler.request_state(rid).slot for rid in "abc"] == [0, 1, 2]
    scheduler.abort("b")
    scheduler.add_request("d", [1], params(max_tokens=3))
    scheduler.abort("a")
    scheduler.add_request("e", [1], params(max_tokens=3))
    scheduler.add_request("f", [1], params(max_tokens=3))
    assert [scheduler.request_state(rid).slot for rid in "cdef"] == [2, 1, 0, 3]
    assert scheduler.num_slots == 4
    out, _ = step(scheduler)
    assert out.req_handles.tolist() == [2, 3, 4, 5]
    assert out.req_slots.tolist() == out.sample_slots.tolist() == [2, 1, 0, 3]
    scheduler.abort("c")  # a finished or aborted request frees its slot, the high-water mark stays
    scheduler.add_request("g", [1], params(max_tokens=3))
    assert (scheduler.request_state("g").slot, scheduler.num_slots) == (2, 4)


def test_step_stats_are_exact_per_step_deltas():
    scheduler = make_scheduler(num_blocks=64, block_size=4, max_num_batched_tokens=64)
    for i in range(4):
        scheduler.add_request(f"r{i}", list(range(10)), params(max_tokens=10, ignore_eos=True))
    stats = []
    while scheduler.has_unfinished:
        out, _ = step(scheduler)
        stats.append(out.stats)
    assert len(stats) == 10
    first, last = stats[0], stats[-1]
    # r0 queries 10 tokens and misses; r1..r3 hit r0's two full blocks, registered in the same step.
    assert (first.prefix_cache_queries, first.prefix_cache_hits) == (40, 24)
    assert (first.num_scheduled_tokens, first.num_scheduled_reqs) == (10 + 3 * 2, 4)
    assert (first.num_running, first.num_waiting) == (4, 0)
    assert (first.num_used_blocks, first.num_free_blocks, first.num_total_blocks) == (2 + 4 * 1, 58, 64)
    # Each request holds 10 + 9 tokens of KV at the end: the 2 shared blocks and 3 of its own.
    assert (last.num_used_blocks, last.num_free_blocks) == (2 + 4 * 3, 50)
    assert sum(s.num_scheduled_tokens for s in stats) == 4 * 19 - 3 * 8
    assert sum(s.num_scheduled_reqs for s in stats) == 40
    assert sum(s.prefix_cache_queries for s in stats) == 40
    assert sum(s.prefix_cache_hits for s in stats) == 24
    assert sum(s.num_preemptions + s.num_encoder_tokens for s in stats) == 0


def test_step_stats_count_waiting_requests():
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add_request("a", [1], params(max_tokens=1))
    scheduler.add_request("b", [1], params(max_tokens=1))
    out = scheduler.schedule()
    assert (out.stats.num_running, out.stats.num_waiting, out.stats.num_scheduled_reqs) == (1, 1, 1)
