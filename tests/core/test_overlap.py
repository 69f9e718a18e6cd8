"""Overlapped scheduling, exact: a step scheduled while the previous one is in flight, its placeholder inputs,
and every stopping rule decided on the real tokens when they arrive."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core

from .helpers import make_scheduler

LENGTH = int(_core.FinishReason.LENGTH)
STOP = int(_core.FinishReason.STOP)
NONE = int(_core.FinishReason.NONE)


def update(scheduler: _core.Scheduler, tokens: list[int]) -> _core.UpdateOutput:
    result = scheduler.update(np.asarray(tokens, dtype=np.int32))
    scheduler.check_invariants()
    return result


def test_decode_is_scheduled_with_its_token_in_flight(scheduler):
    scheduler.add_request("a", [1, 2, 3], _core.RequestParams(max_tokens=4))
    scheduler.add_request("b", [4, 5], _core.RequestParams(max_tokens=4))
    first = scheduler.schedule()
    second = scheduler.schedule()  # overlaps the first: both decodes wait on a placeholder
    assert second.input_ids.tolist() == [-1, -1]
    assert second.positions.tolist() == [3, 2]
    assert second.placeholder_indices.tolist() == [0, 1]
    assert second.placeholder_slots.tolist() == first.sample_slots.tolist() == [0, 1]
    assert second.sample_handles.tolist() == [0, 1]
    state = scheduler.request_state("a")
    assert (state.num_computed_tokens, state.num_output_placeholders, state.token_ids) == (4, 2, [1, 2, 3])
    assert update(scheduler, [7, 8]).token_ids.tolist() == [7, 8]
    third = scheduler.schedule()  # after the first result: the second's tokens are now in flight
    assert third.positions.tolist() == [4, 3] and third.placeholder_indices.tolist() == [0, 1]
    assert update(scheduler, [9, 10]).token_ids.tolist() == [9, 10]
    assert scheduler.request_state("a").token_ids == [1, 2, 3, 7, 9]
    assert scheduler.request_state("b").token_ids == [4, 5, 8, 10]


def test_a_stop_in_flight_drops_the_overlapped_token(scheduler):
    scheduler.add_request("a", [1, 2], _core.RequestParams(max_tokens=8, stop_token_ids=[42]))
    scheduler.schedule()
    scheduler.schedule()
    first = update(scheduler, [42])
    assert first.finish_reasons.tolist() == [STOP] and first.stop_reasons.tolist() == [42]
    assert not scheduler.has_unfinished
    # The token the second step sampled for it is never reported, and its blocks are already free.
    assert update(scheduler, [5]).handles.tolist() == []
    assert scheduler.block_pool.num_free_blocks == scheduler.block_pool.num_blocks


def test_no_token_is_computed_past_max_tokens(scheduler):
    scheduler.add_request("a", [1, 2], _core.RequestParams(max_tokens=2))
    scheduler.schedule()
    assert scheduler.schedule().sample_handles.tolist() == [0]  # output 2 of 2 may still be needed
    assert update(scheduler, [5]).finish_reasons.tolist() == [NONE]
    # Its second token is in flight and is its last: nothing more is scheduled for it.
    assert scheduler.schedule().num_reqs == 0
    assert update(scheduler, [6]).finish_reasons.tolist() == [LENGTH]
    assert not scheduler.has_unfinished


def test_a_request_without_overlap_waits_for_its_token(scheduler):
    scheduler.add_request("g", [1, 2], _core.RequestParams(max_tokens=4, allow_overlap=False))
    scheduler.add_request("a", [3, 4], _core.RequestParams(max_tokens=4))
    scheduler.schedule()
    second = scheduler.schedule()
    assert second.req_handles.tolist() == [1]  # "g" (a grammar, say) waits for its token
    update(scheduler, [5, 6])
    third = scheduler.schedule()
    assert third.req_handles.tolist() == [0, 1] and third.input_ids.tolist() == [5, -1]
    assert third.placeholder_indices.tolist() == [1]


def test_at_most_one_step_overlaps(scheduler):
    scheduler.add_request("a", [1], _core.RequestParams())
    scheduler.schedule()
    scheduler.schedule()
    assert scheduler.num_pending_updates == 2
    with pytest.raises(RuntimeError, match="two steps not updated"):
        scheduler.schedule()


def test_only_real_tokens_are_hashed():
    scheduler = make_scheduler(block_size=2)
    scheduler.add_request("a", [1, 2, 3], _core.RequestParams(max_tokens=8))
    scheduler.schedule()  # computes 1 2 3: block 0 full and registered, block 1 holds 3
    scheduler.schedule()  # the placeholder fills block 1, whose second token is not known yet
    pool = scheduler.block_pool
    block_ids = scheduler.request_state("a").block_ids
    assert [pool.block_hash(b) is not None for b in block_ids] == [True, False]
    update(scheduler, [4])
    update(scheduler, [5])
    scheduler.schedule()  # block 1 = [3, 4], real now: registered at this allocation
    assert pool.block_hash(block_ids[1]) is not None


def test_preempted_with_a_token_in_flight_finishes_from_waiting():
    scheduler = make_scheduler(num_blocks=2, block_size=2)
    scheduler.add_request("a", [1, 2], _core.RequestParams(max_tokens=2))
    scheduler.add_request("b", [3], _core.RequestParams(max_tokens=1, stop_token_ids=[9]))
    scheduler.schedule()
    # "a" needs a second block for its placeholder; none is free, so the newest request, "b", is preempted.
    second = scheduler.schedule()
    assert second.preempted_handles.tolist() == [1]
    first = update(scheduler, [7, 9])
    assert first.finish_reasons.tolist() == [NONE, LENGTH]
    assert scheduler.num_waiting == 0 and scheduler.num_running == 1
    assert update(scheduler, [8]).finish_reasons.tolist() == [LENGTH]
    assert scheduler.block_pool.num_free_blocks == 2
