"""SchedulerActor: owns the C++ scheduler and keeps one batch in flight.

A batch's result is applied and the next batch sent to the runner before the new tokens go to the
detokenizer, so text work overlaps the next step instead of delaying it. Other messages (new requests,
aborts) are applied in bursts, after which a step starts if none is in flight. Idle, it checks the core's
invariants.
"""

from __future__ import annotations

import numpy as np

from kvserve import _core
from kvserve.actors.base import Actor
from kvserve.errors import ErrorInfo, InvalidRequestError
from kvserve.messages import (
    AbortRequest,
    AddRequest,
    BatchResult,
    ExecuteBatch,
    NewRequestData,
    PromptLogprobs,
    RequestAccepted,
    RequestFailed,
    RequestsAborted,
    TokenDeltas,
)


class SchedulerActor(Actor):
    name = "scheduler"

    def __init__(self, config: _core.SchedulerConfig) -> None:
        super().__init__()
        self.core = _core.Scheduler(config)
        self.runner: Actor | None = None
        self.detokenizer: Actor | None = None
        self.request_ids: dict[int, str] = {}  # handle -> request id, for requests the core holds
        self.new_requests: list[NewRequestData] = []
        self.finished_handles: list[int] = []
        self.in_flight: ExecuteBatch | None = None
        self.aborted_in_flight = False
        self.step = 0
        self.num_preemptions = 0
        self.num_aborted = 0
        self.handles(AddRequest, self.on_add)
        self.handles(AbortRequest, self.on_abort)
        self.handles(BatchResult, self.on_result)

    def connect(self, runner: Actor, detokenizer: Actor) -> None:
        self.runner = runner
        self.detokenizer = detokenizer

    def on_add(self, request: AddRequest) -> None:
        params = _core.RequestParams(
            max_tokens=request.max_tokens,
            min_tokens=min(request.params.min_tokens, request.max_tokens),
            eos_token_ids=list(request.eos_token_ids),
            stop_token_ids=list(request.params.stop_token_ids),
            ignore_eos=request.params.ignore_eos,
            priority=request.priority,
            arrival_time=request.arrival_time,
            cache_salt=request.cache_salt,
            # Prompt logprobs need every prompt position computed, so no cached prefix is read.
            skip_prefix_cache=request.params.prompt_logprobs is not None,
        )
        try:
            handle = self.core.add_request(request.request_id, request.prompt_token_ids, params)
        except ValueError as e:
            self.detokenizer.send(RequestFailed(request.request_id, ErrorInfo.of(InvalidRequestError(str(e)))))
            return
        self.request_ids[handle] = request.request_id
        self.new_requests.append(
            NewRequestData(handle, request.params, request.prompt_token_ids, request.eos_token_ids)
        )
        self.detokenizer.send(RequestAccepted(request.request_id))

    def on_abort(self, abort: AbortRequest) -> None:
        try:
            handle = self.core.abort(abort.request_id)
        except _core.UnknownRequestError:
            return  # already finished, failed or aborted
        del self.request_ids[handle]
        self.finished_handles.append(handle)
        self.num_aborted += 1
        self.aborted_in_flight |= self.in_flight is not None
        self.detokenizer.send(RequestsAborted([abort.request_id]))

    def on_result(self, result: BatchResult) -> None:
        deltas = self.apply_result(result)
        self.start_step()
        if deltas is not None:
            self.detokenizer.send(deltas)

    def apply_result(self, result: BatchResult) -> TokenDeltas | None:
        """Applies a step's sampled tokens; returns the deltas for the detokenizer (None if no row sampled)."""
        batch = self.in_flight
        self.in_flight = None
        for chunk in result.prompt_logprobs:
            request_id = self.request_ids.get(chunk.handle)
            if request_id is not None:
                self.detokenizer.send(PromptLogprobs(request_id, chunk.first_position, chunk.logprobs))
        update = self.core.update(result.sampled_token_ids)
        handles = update.handles
        logprobs = result.logprobs
        if logprobs is not None and self.aborted_in_flight:
            # Aborts removed rows from the update: keep the logprob rows of the requests still there.
            logprobs = logprobs.take(np.flatnonzero(np.isin(batch.sample_handles, handles)))
        self.aborted_in_flight = False
        request_ids = [self.request_ids[h] for h in handles.tolist()]
        finished = np.flatnonzero(update.finish_reasons)
        for h in handles[finished].tolist():
            del self.request_ids[h]
            self.finished_handles.append(h)
        if not request_ids:
            return None
        return TokenDeltas(
            request_ids=request_ids,
            token_ids=update.token_ids,
            finish_reasons=update.finish_reasons,
            stop_reasons=update.stop_reasons,
            num_cached_tokens=update.num_cached_tokens,
            logprobs=logprobs,
        )

    async def after_burst(self) -> None:
        if self.in_flight is None and not self.core.has_unfinished:
            self.core.check_invariants()
        self.start_step()

    def start_step(self) -> None:
        """Schedules the next batch and sends it to the runner, unless one is in flight or nothing waits."""
        if self.in_flight is not None or not self.core.has_unfinished:
            return
        out = self.core.schedule()
        if out.num_reqs == 0:
            # Admission checks guarantee a lone request fits; an empty step here would hang every request.
            raise RuntimeError(f"no progress with {self.core.num_waiting} requests waiting and none running")
        self.step += 1
        self.num_preemptions += len(out.preempted_handles)
        self.in_flight = ExecuteBatch(
            step=self.step,
            req_handles=out.req_handles,
            input_ids=out.input_ids,
            positions=out.positions,
            slot_mapping=out.slot_mapping,
            block_tables=out.block_tables,
            query_start_loc=out.query_start_loc,
            seq_lens=out.seq_lens,
            logits_indices=out.logits_indices,
            sample_handles=out.sample_handles,
            max_query_len=out.max_query_len,
            max_seq_len=out.max_seq_len,
            new_requests=tuple(self.new_requests),
            finished_handles=tuple(self.finished_handles),
        )
        self.new_requests.clear()
        self.finished_handles.clear()
        self.runner.send(self.in_flight)
