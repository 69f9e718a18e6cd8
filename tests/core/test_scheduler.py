"""Exact scheduling decisions: chunk sizes, batch layout, admission order, preemption victims, stopping."""

from __future__ import annotations

import numpy as np

from kvserve import _core

from .helpers import make_scheduler, step

LENGTH = int(_core.FinishReason.LENGTH)
STOP = int(_core.FinishReason.STOP)
NONE = int(_core.FinishReason.NONE)


def params(**kw) -> _core.RequestParams:
    return _core.RequestParams(**kw)


def test_mixed_batch_layout(scheduler):
    scheduler.add_request("a", [1, 2, 3], params(max_tokens=4))
    step(scheduler, [7])
    scheduler.add_request("b", [4, 5], params(max_tokens=4))
    out, update = step(scheduler, [8, 9])
    assert out.req_handles.tolist() == [0, 1]
    assert out.input_ids.tolist() == [7, 4, 5]
    assert out.positions.tolist() == [3, 0, 1]
    assert out.query_start_loc.tolist() == [0, 1, 3]
    assert out.seq_lens.tolist() == [4, 2]
    assert out.logits_indices.tolist() == [0, 2]
    assert out.sample_handles.tolist() == [0, 1]
    assert (out.max_query_len, out.max_seq_len) == (2, 4)
    assert out.block_tables.tolist() == [[0], [1]]
    assert update.handles.tolist() == [0, 1] and update.token_ids.tolist() == [8, 9]
    assert scheduler.request_state("a").token_ids == [1, 2, 3, 7, 8]


def test_long_prompt_is_chunked_and_sampled_once():
    scheduler = make_scheduler(max_num_batched_tokens=4)
    scheduler.add_request("a", list(range(10)), params(max_tokens=2))
    chunks = []
    for _ in range(3):
        out, update = step(scheduler)
        chunks.append((out.input_ids.tolist(), out.logits_indices.tolist(), len(update)))
    assert chunks == [([0, 1, 2, 3], [], 0), ([4, 5, 6, 7], [], 0), ([8, 9], [1], 1)]


def test_token_budget_is_shared_running_first():
    scheduler = make_scheduler(max_num_batched_tokens=6)
    scheduler.add_request("a", list(range(4)), params(max_tokens=5))
    step(scheduler)
    scheduler.add_request("b", list(range(10, 20)), params(max_tokens=5))
    out, _ = step(scheduler)
    # a decodes 1 token, b gets the remaining 5 of the budget.
    assert out.query_start_loc.tolist() == [0, 1, 6]
    assert out.logits_indices.tolist() == [0]


def test_chunking_disabled_waits_for_budget():
    scheduler = make_scheduler(max_num_batched_tokens=8, enable_chunked_prefill=False)
    scheduler.add_request("a", list(range(4)), params(max_tokens=5))
    scheduler.add_request("b", list(range(10, 18)), params(max_tokens=5))
    out, _ = step(scheduler)
    assert out.req_handles.tolist() == [0]  # b (8 tokens) does not fit beside a (4)
    out, _ = step(scheduler)
    assert out.req_handles.tolist() == [0]  # 1 + 8 > 8 still
    assert scheduler.num_waiting == 1


def test_blocks_registered_this_step_serve_later_requests_in_the_same_step():
    # KV of a whole batch is written before attention reads it, so b may hit what a computes now.
    scheduler = make_scheduler()
    scheduler.add_request("a", list(range(5)), params(max_tokens=5))
    scheduler.add_request("b", list(range(4)) + [9, 9], params(max_tokens=5))
    out, update = step(scheduler)
    assert out.input_ids.tolist() == [0, 1, 2, 3, 4, 9, 9]
    assert update.num_cached_tokens.tolist() == [0, 4]
    assert out.block_tables.tolist() == [[0, 1], [0, 2]]


def test_max_num_seqs_caps_running():
    scheduler = make_scheduler(max_num_seqs=2, num_blocks=20)
    for rid in "abc":
        scheduler.add_request(rid, [1, 2], params(max_tokens=3))
    out, _ = step(scheduler)
    assert out.req_handles.tolist() == [0, 1]
    assert (scheduler.num_running, scheduler.num_waiting) == (2, 1)


def preemption_setup(policy=_core.SchedulingPolicy.FCFS, priorities=(0, 0)):
    scheduler = make_scheduler(num_blocks=4, block_size=2, enable_prefix_caching=False, policy=policy)
    scheduler.add_request("a", [1, 2, 3], params(max_tokens=4, priority=priorities[0]))
    scheduler.add_request("b", [4, 5, 6], params(max_tokens=4, priority=priorities[1]))
    out, _ = step(scheduler)
    assert out.block_tables.tolist() in ([[0, 1], [2, 3]], [[2, 3], [0, 1]])
    step(scheduler)
    return scheduler


def test_newest_running_request_is_preempted():
    scheduler = preemption_setup()
    out, _ = step(scheduler)  # a needs a third block: b (newest) is preempted, a takes b's first block
    assert out.preempted_handles.tolist() == [1]
    assert out.req_handles.tolist() == [0]
    assert scheduler.request_state("a").block_ids == [0, 1, 2]
    b = scheduler.request_state("b")
    assert (b.status, b.num_computed_tokens, b.block_ids) == (_core.RequestStatus.WAITING, 0, [])
    assert b.token_ids == [4, 5, 6, 101, 101]  # generated tokens are kept and recomputed later
    out, _ = step(scheduler)  # b needs 3 blocks, 1 is free: it keeps waiting
    assert out.req_handles.tolist() == [0]


def test_lowest_priority_request_is_preempted():
    # b has the better (lower) priority, so it runs first and a is the victim although older.
    scheduler = preemption_setup(_core.SchedulingPolicy.PRIORITY, priorities=(1, 0))
    out, _ = step(scheduler)
    assert out.preempted_handles.tolist() == [0]
    assert out.req_handles.tolist() == [1]


def test_preempted_request_resumes_and_finishes_with_all_tokens():
    scheduler = preemption_setup()
    outputs = []
    while scheduler.has_unfinished:
        out, update = step(scheduler)
        outputs += list(zip(update.handles.tolist(), update.finish_reasons.tolist()))
    assert sorted(h for h, r in outputs if r == LENGTH) == [0, 1]
    assert scheduler.block_pool.num_free_blocks == 4


def test_priority_policy_admits_best_priority_first():
    scheduler = make_scheduler(max_num_seqs=1, policy=_core.SchedulingPolicy.PRIORITY)
    scheduler.add_request("low", [1], params(max_tokens=1, priority=5))
    scheduler.add_request("high", [2], params(max_tokens=1, priority=-1))
    scheduler.add_request("mid-early", [3], params(max_tokens=1, priority=0, arrival_time=1.0))
    scheduler.add_request("mid-late", [3], params(max_tokens=1, priority=0, arrival_time=2.0))
    order = [step(scheduler)[0].req_handles.tolist() for _ in range(4)]
    assert order == [[1], [2], [3], [0]]


def test_fcfs_ignores_priority():
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add_request("a", [1], params(max_tokens=1, priority=5))
    scheduler.add_request("b", [2], params(max_tokens=1, priority=-1))
    assert [step(scheduler)[0].req_handles.tolist() for _ in range(2)] == [[0], [1]]


def run_one(scheduler, prompt, sampled, **kw):
    scheduler.add_request("r", prompt, params(**kw))
    results = []
    for token in sampled:
        _, update = step(scheduler, [token])
        results.append((update.finish_reasons[0], update.stop_reasons[0]))
        if results[-1][0] != NONE:
            break
    return results


def test_eos_stops_with_no_stop_reason(scheduler):
    assert run_one(scheduler, [1], [5, 2], max_tokens=10, eos_token_ids=[2]) == [(NONE, -1), (STOP, -1)]


def test_stop_token_reports_its_id(scheduler):
    assert run_one(scheduler, [1], [5, 9], max_tokens=10, stop_token_ids=[9]) == [(NONE, -1), (STOP, 9)]


def test_min_tokens_holds_back_eos_and_stop_tokens(scheduler):
    got = run_one(scheduler, [1], [2, 9, 2], max_tokens=10, min_tokens=2, eos_token_ids=[2], stop_token_ids=[9])
    assert got == [(NONE, -1), (STOP, 9)]


def test_ignore_eos_keeps_going_but_stop_tokens_still_stop(scheduler):
    got = run_one(scheduler, [1], [2, 2, 9], max_tokens=10, ignore_eos=True, eos_token_ids=[2], stop_token_ids=[9])
    assert got == [(NONE, -1), (NONE, -1), (STOP, 9)]


def test_length_wins_over_eos_on_the_last_allowed_token(scheduler):
    assert run_one(scheduler, [1], [5, 2], max_tokens=2, eos_token_ids=[2]) == [(NONE, -1), (LENGTH, -1)]


def test_max_model_len_caps_generation():
    scheduler = make_scheduler(max_model_len=6)
    got = run_one(scheduler, [1, 2, 3, 4], [5] * 10, max_tokens=50)
    assert got == [(NONE, -1), (LENGTH, -1)]
    # A prompt of exactly max_model_len tokens still yields one token.
    assert run_one(make_scheduler(max_model_len=6), [1] * 6, [5], max_tokens=50) == [(LENGTH, -1)]


def test_abort_frees_blocks_at_once(scheduler):
    scheduler.add_request("a", list(range(10)), params(max_tokens=5))
    step(scheduler)
    assert scheduler.abort("a") == 0
    assert scheduler.block_pool.num_free_blocks == 10
    assert not scheduler.has_unfinished
    scheduler.check_invariants()


def test_abort_between_schedule_and_update_drops_the_sample(scheduler):
    scheduler.add_request("a", [1, 2], params(max_tokens=5))
    scheduler.add_request("b", [3, 4], params(max_tokens=5))
    scheduler.schedule()
    scheduler.abort("a")
    update = scheduler.update(np.array([7, 8], dtype=np.int32))
    assert update.handles.tolist() == [1] and update.token_ids.tolist() == [8]
    scheduler.check_invariants()


def test_abort_waiting_request(scheduler):
    scheduler.add_request("a", [1, 2], params(max_tokens=5))
    scheduler.abort("a")
    assert scheduler.num_waiting == 0
    assert scheduler.schedule().num_reqs == 0
    assert not scheduler.has_pending_update


def test_empty_schedule_needs_no_update(scheduler):
    out = scheduler.schedule()
    assert (out.num_reqs, out.num_tokens, out.block_tables.shape) == (0, 0, (0, 0))
    scheduler.schedule()
