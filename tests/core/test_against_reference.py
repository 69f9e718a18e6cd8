"""Random traces through the C++ scheduler and the pure-Python reference must agree on every decision.

Small vocabularies and pools make prefix hits, chunking, preemption and evictions frequent; after every
operation both sides are compared block by block and request by request, and both check their invariants.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvserve import _core
from kvserve.reference import scheduler as ref

TOKENS = st.integers(min_value=0, max_value=5)
PREFIXES = [[], [1, 2, 3, 4], [1, 2, 3, 4, 5, 0, 1, 2]]

REQUEST = st.fixed_dictionaries(
    {
        "prefix": st.sampled_from(PREFIXES),
        "suffix": st.lists(TOKENS, max_size=12),
        "max_tokens": st.integers(1, 12),
        "min_tokens": st.integers(0, 3),
        "eos": st.sampled_from([[], [0], [0, 5]]),
        "stop": st.sampled_from([[], [4]]),
        "ignore_eos": st.booleans(),
        "priority": st.integers(-1, 1),
        "arrival_time": st.sampled_from([0.0, 1.0, 2.0]),
        "cache_salt": st.sampled_from(["", "", "s"]),
        "skip_prefix_cache": st.sampled_from([False, False, True]),
    }
)


class SchedulerComparison(RuleBasedStateMachine):
    @initialize(
        num_blocks=st.integers(3, 24),
        block_size=st.sampled_from([1, 2, 4]),
        max_num_seqs=st.integers(1, 6),
        max_num_batched_tokens=st.integers(1, 24),
        max_model_len=st.integers(2, 40),
        enable_prefix_caching=st.booleans(),
        enable_chunked_prefill=st.booleans(),
        priority=st.booleans(),
    )
    def setup(self, priority: bool, **kw) -> None:
        self.core = _core.Scheduler(
            _core.SchedulerConfig(
                **kw, policy=_core.SchedulingPolicy.PRIORITY if priority else _core.SchedulingPolicy.FCFS
            )
        )
        self.ref = ref.ReferenceScheduler(
            ref.SchedulerConfig(**kw, policy=ref.Policy.PRIORITY if priority else ref.Policy.FCFS)
        )
        self.num_added = 0
        self.live: list[str] = []

    @rule(request=REQUEST)
    def add_request(self, request: dict) -> None:
        request_id = f"r{self.num_added}"
        self.num_added += 1
        prompt = request["prefix"] + request["suffix"]
        kw = dict(
            max_tokens=request["max_tokens"],
            min_tokens=min(request["min_tokens"], request["max_tokens"]),
            eos_token_ids=request["eos"],
            stop_token_ids=request["stop"],
            ignore_eos=request["ignore_eos"],
            priority=request["priority"],
            arrival_time=request["arrival_time"],
            cache_salt=request["cache_salt"],
            skip_prefix_cache=request["skip_prefix_cache"],
        )
        ref_error = core_error = None
        try:
            ref_handle = self.ref.add_request(request_id, prompt, ref.RequestParams(**kw))
        except ValueError as e:
            ref_error = e
        try:
            core_handle = self.core.add_request(request_id, prompt, _core.RequestParams(**kw))
        except ValueError as e:
            core_error = e
        assert (ref_error is None) == (core_error is None), (ref_error, core_error)
        if ref_error is None:
            assert core_handle == ref_handle
            self.live.append(request_id)

    @rule(data=st.data(), abort_in_flight=st.booleans())
    def step(self, data: st.DataObject, abort_in_flight: bool) -> None:
        core_out = self.core.schedule()
        ref_out = ref.as_arrays(self.ref.schedule())
        for name, expected in ref_out.items():
            actual = getattr(core_out, name)
            assert actual.dtype == expected.dtype, name
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        if core_out.num_reqs == 0:
            assert not self.core.has_pending_update
            return
        if abort_in_flight:
            self.abort(data.draw(st.sampled_from(self.live)))
        sampled = data.draw(
            st.lists(TOKENS, min_size=len(ref_out["sample_handles"]), max_size=len(ref_out["sample_handles"]))
        )
        core_update = self.core.update(np.asarray(sampled, dtype=np.int32))
        ref_deltas = self.ref.update(sampled)
        assert core_update.handles.tolist() == [d.handle for d in ref_deltas]
        assert core_update.token_ids.tolist() == [d.token_id for d in ref_deltas]
        assert core_update.finish_reasons.tolist() == [int(d.finish_reason) for d in ref_deltas]
        assert core_update.stop_reasons.tolist() == [d.stop_reason for d in ref_deltas]
        assert core_update.num_cached_tokens.tolist() == [d.num_cached_tokens for d in ref_deltas]
        self.live = [rid for rid in self.live if rid in self.ref.requests]

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def abort_one(self, data: st.DataObject) -> None:
        self.abort(data.draw(st.sampled_from(self.live)))

    def abort(self, request_id: str) -> None:
        assert self.core.abort(request_id) == self.ref.abort(request_id)
        self.live.remove(request_id)

    @rule()
    def abort_unknown(self) -> None:
        with pytest.raises(KeyError):
            self.core.abort("unknown")

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "core"):
            return
        self.core.check_invariants()
        self.ref.check_invariants()
        pool = self.core.block_pool
        assert pool.free_block_ids() == self.ref.kv.free_block_ids()
        assert [pool.ref_count(b) for b in range(pool.num_blocks)] == [b.ref_count for b in self.ref.kv.blocks]
        assert [pool.block_hash(b) is not None for b in range(pool.num_blocks)] == [
            b.key is not None for b in self.ref.kv.blocks
        ]
        stats = pool.stats
        assert (stats.num_requests, stats.num_query_tokens, stats.num_hit_tokens) == (
            self.ref.kv.num_query_requests,
            self.ref.kv.num_query_tokens,
            self.ref.kv.num_hit_tokens,
        )
        assert (self.core.num_waiting, self.core.num_running) == (self.ref.num_waiting, self.ref.num_running)
        for request_id in self.live:
            core_state = self.core.request_state(request_id)
            ref_state = self.ref.requests[request_id]
            assert core_state.block_ids == ref_state.block_ids
            assert core_state.num_computed_tokens == ref_state.num_computed_tokens
            assert core_state.token_ids == ref_state.token_ids
            assert core_state.num_cached_tokens == ref_state.num_cached_tokens


SchedulerComparison.TestCase.settings = settings(
    max_examples=int(os.environ.get("KVSERVE_HYPOTHESIS_EXAMPLES", 200)),
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_matches_reference = SchedulerComparison.TestCase
