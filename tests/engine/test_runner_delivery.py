"""The runner actor with step results that arrive after `execute` returns (a GPU step's host copy).

A stand-in executor returns results whose `wait` blocks until the test releases them, so the test controls
what the device has finished: the actor must launch the next step while the previous one's result is still
pending, deliver results in step order, run calls only once every launched step is delivered, and fail (not
hang or skip) when a step's result raises.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import torch

from kvserve.actors.base import Actor
from kvserve.actors.runner import RunnerActor, runner_thread
from kvserve.messages import BatchResult, RunnerCall, RunnerReply
from kvserve.model.step_result import DoneResult


class _Pending:
    def __init__(self, step: int, error: Exception | None = None) -> None:
        self.step = step
        self.error = error
        self.finished = threading.Event()  # "the device finished this step"

    def ready(self) -> bool:
        return self.finished.is_set()

    def wait(self) -> BatchResult:
        if not self.finished.wait(timeout=10):
            raise TimeoutError(f"step {self.step} was never released")
        if self.error is not None:
            raise self.error
        return BatchResult(self.step, np.array([self.step], dtype=np.int32), None)


class _Batch:
    def __init__(self, step: int) -> None:
        self.step = step


class _Executor:
    device = torch.device("cpu")

    def __init__(self, *, done: bool = False, errors: dict[int, Exception] | None = None) -> None:
        self.done = done
        self.errors = errors or {}
        self.launched: list[int] = []
        self.pending: dict[int, _Pending] = {}

    def execute(self, batch: _Batch) -> Any:
        self.launched.append(batch.step)
        if self.done:
            return DoneResult(BatchResult(batch.step, np.array([batch.step], dtype=np.int32), None))
        pending = self.pending[batch.step] = _Pending(batch.step, self.errors.get(batch.step))
        return pending

    def call(self, method: str, args: tuple, kwargs: dict, *, internal: bool) -> list[Any]:
        return [(method, sorted(self.pending))]


class _Collector(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[object] = []
        self.arrived = asyncio.Event()
        self.handles(BatchResult, self._on)
        self.handles(RunnerReply, self._on)

    def _on(self, message: object) -> None:
        self.received.append(message)
        self.arrived.set()


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the condition")
        await asyncio.sleep(0.005)


def _start(executor: _Executor) -> tuple[RunnerActor, _Collector, list[BaseException]]:
    scheduler, router = _Collector(), _Collector()
    failures: list[BaseException] = []
    actor = RunnerActor(executor, runner_thread(1), scheduler, router)
    actor.handles(_Batch, actor.on_execute)  # the stand-in batch carries only its step
    for a in (scheduler, router, actor):
        a.start(lambda _actor, error: failures.append(error))
    return actor, scheduler, failures


async def _stop(actor: RunnerActor, *others: Actor) -> None:
    for a in (actor, *others):
        await a.stop()


def test_the_next_step_launches_while_the_previous_result_is_pending_and_results_stay_in_order():
    async def body() -> None:
        executor = _Executor()
        actor, scheduler, failures = _start(executor)
        actor.send(_Batch(1))
        actor.send(_Batch(2))
        await _until(lambda: executor.launched == [1, 2])
        assert scheduler.received == []  # neither step's result is on the host yet
        executor.pending[2].finished.set()  # the later step's copy cannot overtake the earlier one
        await asyncio.sleep(0.05)
        assert scheduler.received == []
        executor.pending[1].finished.set()
        await _until(lambda: len(scheduler.received) == 2)
        assert [r.step for r in scheduler.received] == [1, 2]
        actor.send(_Batch(3))  # delivered at once when it is already done
        await _until(lambda: 3 in executor.pending)
        executor.pending[3].finished.set()
        await _until(lambda: len(scheduler.received) == 3)
        assert scheduler.received[2].sampled_token_ids.tolist() == [3] and failures == []
        assert actor.num_returned_early == 3  # each launch returned before its step was "finished"
        await _stop(actor, scheduler)

    asyncio.run(body())


def test_results_done_at_launch_are_sent_without_the_waiter_thread():
    async def body() -> None:
        executor = _Executor(done=True)
        actor, scheduler, _ = _start(executor)
        for step in (1, 2, 3):
            actor.send(_Batch(step))
        await _until(lambda: len(scheduler.received) == 3)
        assert [r.step for r in scheduler.received] == [1, 2, 3]
        assert actor.waiter._threads == set()  # never needed: CPU steps are finished when launch returns
        await _stop(actor, scheduler)

    asyncio.run(body())


def test_a_call_runs_only_after_every_launched_step_is_delivered():
    async def body() -> None:
        executor = _Executor()
        actor, scheduler, _ = _start(executor)
        actor.send(_Batch(1))
        actor.send(RunnerCall(call_id=7, method="sleep", args=(1,), kwargs={}))
        await _until(lambda: executor.launched == [1])
        await asyncio.sleep(0.05)
        assert actor.router.received == []  # the call waits behind step 1's result
        executor.pending[1].finished.set()
        await _until(lambda: len(actor.router.received) == 1)
        reply = actor.router.received[0]
        assert [r.step for r in scheduler.received] == [1] and reply.call_id == 7
        await _stop(actor, scheduler, actor.router)

    asyncio.run(body())


def test_a_step_that_fails_on_the_device_fails_the_actor():
    async def body() -> None:
        executor = _Executor(errors={2: RuntimeError("CUDA error: an illegal memory access")})
        actor, scheduler, failures = _start(executor)
        actor.send(_Batch(1))
        actor.send(_Batch(2))
        await _until(lambda: executor.launched == [1, 2])
        executor.pending[1].finished.set()
        executor.pending[2].finished.set()
        await _until(lambda: failures != [])
        assert [r.step for r in scheduler.received] == [1]
        assert "illegal memory access" in str(failures[0])
        await _stop(actor, scheduler)

    asyncio.run(body())


@pytest.mark.parametrize("method", ["execute", "launch"])
def test_the_scheduler_drives_steps_not_collective_rpc(method):
    from kvserve.errors import InvalidRequestError
    from kvserve.model.runner import ModelRunner

    with pytest.raises(InvalidRequestError):
        ModelRunner.rpc_method(ModelRunner.__new__(ModelRunner), method)
