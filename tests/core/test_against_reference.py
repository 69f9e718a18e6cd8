"""Random traces through the C++ scheduler and the pure-Python reference must agree on every decision.

Small vocabularies and pools make prefix hits, chunking, preemption and evictions frequent; the three task
kinds are mixed in one trace, with encoder lengths and budgets small enough that the encoder budget and the
cross blocks gate admission. After every operation both sides are compared block by block and request by
request (slots and cross blocks included), and both check their invariants.

Half the traces overlap steps: they schedule the next step before updating the one in flight (as the
scheduler actor does with async scheduling), and aborts, preemption and stops land with a step in flight.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvserve import _core
from tests import reference_scheduler as ref

TOKENS = st.integers(min_value=0, max_value=5)
PREFIXES = [[], [1, 2, 3, 4], [1, 2, 3, 4, 5, 0, 1, 2]]

REQUEST = st.fixed_dictionaries(
    {
        "prefix": st.sampled_from(PREFIXES),
        "suffix": st.lists(TOKENS, max_size=8),
        "task": st.sampled_from(list(ref.TaskKind)),
        # Mostly an encoder length that fits the kind (0 unless encoder-decoder), sometimes a wrong one.
        "num_encoder_tokens": st.sampled_from([1, 2, 3, 5, 9]),
        "wrong_num_encoder_tokens": st.integers(0, 9).map(lambda n: n == 0),
        "max_tokens": st.integers(0, 8),
        "min_tokens": st.integers(0, 3),
        # Mostly none, so that requests live long enough to fill the pool and be preempted.
        "eos": st.sampled_from([[], [], [], [0], [0, 5]]),
        "stop": st.sampled_from([[], [], [4]]),
        "ignore_eos": st.booleans(),
        "priority": st.integers(-1, 1),
        "arrival_time": st.sampled_from([0.0, 1.0, 2.0]),
        "cache_salt": st.sampled_from(["", "", "s"]),
        "skip_prefix_cache": st.sampled_from([False, False, True]),
        "allow_overlap": st.sampled_from([True, True, False]),
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
        max_num_encoder_input_tokens=st.sampled_from([0, 0, 2, 4, 6, 9, 16]),
        requests=st.lists(REQUEST, max_size=8),
        overlap=st.booleans(),
    )
    def setup(self, priority: bool, requests: list[dict], overlap: bool, **kw) -> None:
        self.core = _core.Scheduler(
            _core.SchedulerConfig(
                **kw, policy=_core.SchedulingPolicy.PRIORITY if priority else _core.SchedulingPolicy.FCFS
            )
        )
        self.ref = ref.ReferenceScheduler(
            ref.SchedulerConfig(**kw, policy=ref.Policy.PRIORITY if priority else ref.Policy.FCFS)
        )
        self.num_added = 0
        self.overlap = overlap
        self.live: list[str] = []
        self.add_requests(requests)

    # Several requests per rule and several steps per rule: otherwise the aborts (as likely as an add) empty
    # the scheduler before it runs long enough to fill its pool.
    @rule(requests=st.lists(REQUEST, min_size=1, max_size=6))
    def add_requests(self, requests: list[dict]) -> None:
        for request in requests:
            self.add_request(request)

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
            allow_overlap=request["allow_overlap"],
        )
        task = request["task"]
        fits = (task == ref.TaskKind.ENCODER_DECODER) != request["wrong_num_encoder_tokens"]
        kw["num_encoder_tokens"] = request["num_encoder_tokens"] if fits else 0
        ref_error = core_error = None
        try:
            ref_handle = self.ref.add_request(request_id, prompt, ref.RequestParams(**kw, task=task))
        except ValueError as e:
            ref_error = e
        try:
            core_params = _core.RequestParams(**kw, task=_core.TaskKind(int(task)))
            core_handle = self.core.add_request(request_id, prompt, core_params)
        except ValueError as e:
            core_error = e
        assert (ref_error is None) == (core_error is None), (ref_error, core_error)
        if ref_error is None:
            assert core_handle == ref_handle
            self.live.append(request_id)

    @rule(data=st.data(), num_steps=st.integers(1, 24))
    def steps(self, data: st.DataObject, num_steps: int) -> None:
        """Schedules and updates; with overlap, mostly schedules the next step before updating the one in
        flight. Aborts land between any two of these, so with steps in flight too."""
        for _ in range(num_steps):
            pending = self.core.num_pending_updates
            assert pending == len(self.ref.pending)
            overlap = pending == 1 and self.overlap and data.draw(st.integers(0, 3), label="overlap") > 0
            if (pending == 0 or overlap) and self.core.has_unfinished:
                self.schedule()
            elif pending:
                self.update(data)
            else:
                break
            if self.live and data.draw(st.integers(0, 9), label="abort") == 0:
                self.abort(data.draw(st.sampled_from(self.live)))

    def schedule(self) -> None:
        num_pending = self.core.num_pending_updates
        core_out = self.core.schedule()
        ref_step = self.ref.schedule()
        ref_out = ref.as_arrays(ref_step)
        for name, expected in ref_out.items():
            actual = getattr(core_out, name)
            assert actual.dtype == expected.dtype, name
            assert actual.shape == expected.shape, name
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        assert {name: getattr(core_out.stats, name) for name in ref_step.stats} == ref_step.stats
        for name in ("preempted_handles", "pool_handles", "encoder_handles", "placeholder_indices"):
            if len(ref_out[name]):
                event(name)
        if ref_step.stats["prefix_cache_hits"]:
            event("prefix hit")
        if len(ref_out["preempted_handles"]) and num_pending:
            event("preempted with a step in flight")
        assert self.core.num_pending_updates == num_pending + (core_out.num_reqs > 0)

    def update(self, data: st.DataObject) -> None:
        num_rows = len(self.ref.pending[0][0])
        sampled = data.draw(st.lists(TOKENS, min_size=num_rows, max_size=num_rows), label="sampled")
        core_update = self.core.update(np.asarray(sampled, dtype=np.int32))
        ref_update = self.ref.update(sampled)
        ref_deltas = ref_update.deltas
        assert core_update.pooled_handles.dtype == np.int64
        assert core_update.pooled_handles.tolist() == ref_update.pooled_handles
        assert core_update.handles.tolist() == [d.handle for d in ref_deltas]
        assert core_update.token_ids.tolist() == [d.token_id for d in ref_deltas]
        assert core_update.finish_reasons.tolist() == [int(d.finish_reason) for d in ref_deltas]
        assert core_update.stop_reasons.tolist() == [d.stop_reason for d in ref_deltas]
        assert core_update.num_cached_tokens.tolist() == [d.num_cached_tokens for d in ref_deltas]
        if len(ref_deltas) < num_rows:
            event("rows dropped (aborted or finished while in flight)")
        self.live = [rid for rid in self.live if rid in self.ref.requests]

    # As likely as an add, an abort would keep the pool nearly empty: only one draw in three aborts.
    @precondition(lambda self: self.live)
    @rule(data=st.data(), abort=st.integers(0, 2).map(lambda n: n == 0))
    def abort_one(self, data: st.DataObject, abort: bool) -> None:
        if abort:
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
        assert self.core.num_slots == self.ref.num_slots
        for request_id in self.live:
            core_state = self.core.request_state(request_id)
            ref_state = self.ref.requests[request_id]
            assert core_state.block_ids == ref_state.block_ids
            assert core_state.num_computed_tokens == ref_state.num_computed_tokens
            assert core_state.num_output_placeholders == ref_state.num_output_placeholders
            assert core_state.token_ids == ref_state.token_ids
            assert core_state.num_cached_tokens == ref_state.num_cached_tokens
            assert core_state.cross_block_ids == ref_state.cross_block_ids
            assert core_state.slot == ref_state.slot


SchedulerComparison.TestCase.settings = settings(
    max_examples=int(os.environ.get("KVSERVE_HYPOTHESIS_EXAMPLES", 200)),
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_matches_reference = SchedulerComparison.TestCase
