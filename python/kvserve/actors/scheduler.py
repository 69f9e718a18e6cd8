"""SchedulerActor: owns the C++ scheduler and keeps one batch in flight, or two with async scheduling.

Async scheduling (EngineConfig.async_scheduling): batch N+1 is scheduled and sent while batch N executes, so
the runner starts N+1 as soon as N ends and this actor's work (applying results, scheduling) and the
detokenizer's overlap the forward passes. Requests whose token of step N is still in flight run in N+1 with
a placeholder input that the runner fills on the device; the core decides every stop on real tokens and drops
the rows of requests that finished meanwhile, so each token reaches the detokenizer once, in order. Requests
with a grammar wait for their token (their next bitmask needs it on the host). Results come back in order
(the runner executes one batch at a time).

A batch's result is applied and the next batch sent to the runner before the new outputs go to the
detokenizer, so text work overlaps the next step instead of delaying it. Other messages (new requests,
aborts) are applied in bursts, after which a step starts if none is in flight. Idle, it checks the core's
invariants, and once it has stayed idle for `idle_delay` seconds it calls `on_idle` (the engine hands free
memory back to the system there). Every executed step ends with a StepStats message to the router.

Watchdog: a step that has not come back within `step_timeout` seconds (a hung device, a deadlocked kernel)
fails this actor, which marks the engine dead, so no request waits forever on a step that never ends.

Sleep: PauseForSleep fails every request held and stops stepping until Resume; the runner's sleep call is
passed on behind any step in flight, so the model is never released under a running step.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvserve import _core
from kvserve.actors.base import Actor
from kvserve.actors.core_params import core_request_params
from kvserve.errors import EngineDeadError, ErrorInfo, InvalidRequestError, ServiceUnavailableError
from kvserve.messages import (
    AbortRequest,
    BatchResult,
    ExecuteBatch,
    NewRequest,
    PauseForSleep,
    PooledOutputs,
    PromptLogprobs,
    RequestAccepted,
    RequestFailed,
    RequestsAborted,
    RequestsScheduled,
    Resume,
    StepStats,
    TokenDeltas,
)
from kvserve.request import PreparedRequest

ASLEEP = "The engine is sleeping (POST /wake_up wakes it); it serves no requests until then."


@dataclass(frozen=True, slots=True)
class _Admitted:
    request_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class _InFlight:
    batch: ExecuteBatch
    stats: _core.StepStats


class SchedulerActor(Actor):
    name = "scheduler"

    def __init__(
        self,
        config: _core.SchedulerConfig,
        step_timeout: float | None = None,
        async_scheduling: bool = False,
        on_idle: Callable[[], None] | None = None,
        idle_delay: float = 0.5,
    ) -> None:
        super().__init__()
        self.core = _core.Scheduler(config)
        self.step_timeout = step_timeout
        self.max_in_flight = 2 if async_scheduling else 1
        self._watchdog: asyncio.TimerHandle | None = None
        self.on_idle = on_idle
        self.idle_delay = idle_delay
        self._idle_timer: asyncio.TimerHandle | None = None
        self.runner: Actor | None = None
        self.detokenizer: Actor | None = None
        self.router: Actor | None = None
        self.requests: dict[int, _Admitted] = {}  # handle -> request, for requests the core holds
        self.unscheduled: set[int] = set()  # handles admitted but never scheduled yet (their queue time runs)
        self.new_requests: list[NewRequest] = []
        self.finished_slots: list[int] = []
        self.in_flight: deque[_InFlight] = deque()  # oldest first; results come back in this order
        self.num_unreported_preemptions = 0  # by schedules that produced no batch (all work in flight)
        self.num_overlapped_steps = 0  # batches sent while another was in flight
        self.step = 0
        self.num_aborted = 0
        self.paused = False  # asleep: no request is admitted and no step starts
        self.handles(PreparedRequest, self.on_add)
        self.handles(AbortRequest, self.on_abort)
        self.handles(BatchResult, self.on_result)
        self.handles(PauseForSleep, self.on_pause)
        self.handles(Resume, self.on_resume)

    def connect(self, runner: Actor, detokenizer: Actor, router: Actor) -> None:
        self.runner = runner
        self.detokenizer = detokenizer
        self.router = router

    def on_add(self, prepared: PreparedRequest) -> None:
        request_id = prepared.request_id
        if self.paused:
            self.detokenizer.send(RequestFailed(request_id, ErrorInfo.of(ServiceUnavailableError(ASLEEP))))
            return
        try:
            handle = self.core.add_request(request_id, prepared.prompt_token_ids, core_request_params(prepared))
        except ValueError as e:
            self.detokenizer.send(RequestFailed(request_id, ErrorInfo.of(InvalidRequestError(str(e)))))
            return
        slot = self.core.request_state(request_id).slot
        self.requests[handle] = _Admitted(request_id, slot)
        self.unscheduled.add(handle)
        self.new_requests.append(NewRequest(handle, slot, prepared))
        self.detokenizer.send(RequestAccepted(request_id))

    def on_abort(self, abort: AbortRequest) -> None:
        try:
            handle = self.core.abort(abort.request_id)
        except _core.UnknownRequestError:
            return  # already finished, failed or aborted
        self._forget(handle)
        self.num_aborted += 1
        self.detokenizer.send(RequestsAborted([abort.request_id]))

    def on_pause(self, pause: PauseForSleep) -> None:
        self.paused = True
        error = ErrorInfo.of(ServiceUnavailableError(ASLEEP))
        for handle in list(self.requests):
            request_id = self._forget(handle)
            self.core.abort(request_id)
            self.num_aborted += 1
            self.detokenizer.send(RequestFailed(request_id, error))
        self.runner.send(pause.call)

    def on_resume(self, _: Resume) -> None:
        # The KV the cached blocks held was released with the KV cache.
        if not self.core.reset_prefix_cache():
            raise RuntimeError("the prefix cache could not be reset after sleep: blocks are still in use")
        self.paused = False

    def _forget(self, handle: int) -> str:
        admitted = self.requests.pop(handle)
        self.unscheduled.discard(handle)
        self.finished_slots.append(admitted.slot)
        return admitted.request_id

    def on_result(self, result: BatchResult) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        outputs = self.apply_result(result)
        self.start_step()
        self._arm_watchdog()
        for message in outputs:
            self.detokenizer.send(message)

    def apply_result(self, result: BatchResult) -> list[object]:
        """Applies a step's output rows; returns the messages for the detokenizer."""
        done = self.in_flight.popleft()
        batch, core_stats = done.batch, done.stats
        if batch.step != result.step:
            raise RuntimeError(f"the result of step {result.step} came back while step {batch.step} was oldest")
        now = time.monotonic()
        messages: list[object] = []
        for chunk in result.prompt_logprobs:
            admitted = self.requests.get(chunk.handle)
            if admitted is not None:
                messages.append(PromptLogprobs(admitted.request_id, chunk.first_position, chunk.logprobs))
        update = self.core.update(result.sampled_token_ids)
        messages.extend(self._pooled_outputs(result, update.pooled_handles, now))
        handles = update.handles
        logprobs = result.logprobs
        if logprobs is not None and len(handles) < len(batch.sample_handles):
            # The update dropped the rows of requests aborted or finished since the batch was scheduled: keep
            # the logprob rows of the requests still there.
            logprobs = logprobs.take(np.flatnonzero(np.isin(batch.sample_handles, handles)))
        request_ids = [self.requests[h].request_id for h in handles.tolist()]
        finished = np.flatnonzero(update.finish_reasons)
        for h in handles[finished].tolist():
            self._forget(h)
        if request_ids:
            messages.append(
                TokenDeltas(
                    request_ids=request_ids,
                    token_ids=update.token_ids,
                    finish_reasons=update.finish_reasons,
                    stop_reasons=update.stop_reasons,
                    num_cached_tokens=update.num_cached_tokens,
                    logprobs=logprobs,
                    time=now,
                )
            )
        self.router.send(self._step_stats(batch.step, now, core_stats, len(handles), len(finished), update))
        return messages

    def _pooled_outputs(self, result: BatchResult, pooled_handles: np.ndarray, now: float) -> list[PooledOutputs]:
        if len(pooled_handles) == 0:
            return []
        values = dict(zip(result.pooled.handles.tolist(), result.pooled.values))
        handles = pooled_handles.tolist()
        request_ids = [self._forget(h) for h in handles]
        return [PooledOutputs(request_ids, tuple(values[h] for h in handles), now)]

    def _step_stats(
        self,
        step: int,
        now: float,
        core: _core.StepStats,
        num_sampled: int,
        num_finished: int,
        update: _core.UpdateOutput,
    ) -> StepStats:
        num_pooled = len(update.pooled_handles)
        # Gauges as the step left them (finished requests gone, their blocks freed), so the last step of a
        # burst leaves the gauges at rest; each is an O(1) read of the core.
        num_free_blocks = self.core.block_pool.num_free_blocks
        num_preemptions = core.num_preemptions + self.num_unreported_preemptions
        self.num_unreported_preemptions = 0
        return StepStats(
            step=step,
            time=now,
            num_running=self.core.num_running,
            num_waiting=self.core.num_waiting,
            num_used_blocks=core.num_total_blocks - num_free_blocks,
            num_free_blocks=num_free_blocks,
            num_total_blocks=core.num_total_blocks,
            prefix_cache_queries=core.prefix_cache_queries,
            prefix_cache_hits=core.prefix_cache_hits,
            num_preemptions=num_preemptions,
            num_scheduled_tokens=core.num_scheduled_tokens,
            num_scheduled_reqs=core.num_scheduled_reqs,
            num_encoder_tokens=core.num_encoder_tokens,
            num_generated_tokens=num_sampled,
            num_finished=num_finished + num_pooled,
            num_pooled=num_pooled,
        )

    async def after_burst(self) -> None:
        idle = not self.in_flight and not self.core.has_unfinished  # then start_step has nothing to start
        if idle:
            self.core.check_invariants()
        self.start_step()
        self._watch_idleness(idle)

    def _watch_idleness(self, idle: bool) -> None:
        """Arms the idle timer when nothing is left to run, disarms it when work came back."""
        if idle and self.on_idle is not None and self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(self.idle_delay, self._on_idle_timer)
        elif not idle and self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        self.on_idle()

    def start_step(self) -> None:
        """Schedules batches and sends them to the runner until max_in_flight are in flight or nothing is left
        to schedule: with one in flight, the next batch holds only the work that does not wait on it."""
        while len(self.in_flight) < self.max_in_flight and not self.paused and self.core.has_unfinished:
            out = self.core.schedule()
            if out.num_reqs == 0:
                if not self.in_flight:
                    # Admission checks guarantee a lone request fits; an empty step here would hang every request.
                    raise RuntimeError(f"no progress with {self.core.num_waiting} requests waiting and none running")
                self.num_unreported_preemptions += len(out.preempted_handles)
                return
            self._send_batch(out)

    def _send_batch(self, out: _core.SchedulerOutput) -> None:
        self.step += 1
        if self.unscheduled:
            self._report_first_scheduled(out.req_handles)
        batch = ExecuteBatch(
            step=self.step,
            req_handles=out.req_handles,
            req_slots=out.req_slots,
            input_ids=out.input_ids,
            positions=out.positions,
            slot_mapping=out.slot_mapping,
            block_tables=out.block_tables,
            query_start_loc=out.query_start_loc,
            seq_lens=out.seq_lens,
            logits_indices=out.logits_indices,
            sample_handles=out.sample_handles,
            sample_slots=out.sample_slots,
            pool_handles=out.pool_handles,
            pool_req_indices=out.pool_req_indices,
            pool_slots=out.pool_slots,
            encoder_handles=out.encoder_handles,
            encoder_req_indices=out.encoder_req_indices,
            cross_block_tables=out.cross_block_tables,
            cross_seq_lens=out.cross_seq_lens,
            cross_slot_mapping=out.cross_slot_mapping,
            max_query_len=out.max_query_len,
            max_seq_len=out.max_seq_len,
            new_requests=tuple(self.new_requests),
            finished_slots=tuple(self.finished_slots),
            placeholder_indices=out.placeholder_indices,
            placeholder_slots=out.placeholder_slots,
        )
        self.new_requests.clear()
        self.finished_slots.clear()
        self.num_overlapped_steps += len(self.in_flight)
        self.in_flight.append(_InFlight(batch, out.stats))
        self.runner.send(batch)
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        """Times the oldest batch in flight: the one the runner is executing (or about to)."""
        if self.step_timeout is not None and self._watchdog is None and self.in_flight:
            step = self.in_flight[0].batch.step
            self._watchdog = asyncio.get_running_loop().call_later(self.step_timeout, self._on_stalled, step)

    async def stop(self) -> None:
        for timer in (self._watchdog, self._idle_timer):
            if timer is not None:
                timer.cancel()
        await super().stop()

    def _on_stalled(self, step: int) -> None:
        self.fail(EngineDeadError(f"step {step} did not finish within the {self.step_timeout:g} s step timeout"))

    def _report_first_scheduled(self, req_handles: np.ndarray) -> None:
        first = [h for h in req_handles[np.isin(req_handles, list(self.unscheduled))].tolist()]
        if first:
            self.unscheduled.difference_update(first)
            ids = [self.requests[h].request_id for h in first]
            message = RequestsScheduled(ids, time.monotonic())
            self.detokenizer.send(message)
            self.router.send(message)  # the end of their queueing: the engine's admission control counts it
