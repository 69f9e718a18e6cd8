"""RunnerActor: executes steps on a dedicated thread so the event loop stays free while the model runs.

It drives an Executor: the ModelRunner itself (TP=1) or tensor-parallel worker processes, which the thread
then waits on.

A step's result may still be on its way from the device when `execute` returns (model/step_result.py): it
is then waited for on a second thread, and results go to the scheduler in step order. The runner thread is
meanwhile free to launch the next step the scheduler sent (async scheduling), so a GPU runs step N+1 right
behind step N instead of idling while the host collects N's ids and prepares N+1. On CPU a step is done when
`execute` returns, and its result is sent at once.

All torch work, model loading included, happens on that one thread: once torch runs on two threads, their
OpenMP teams compete for the cores and every op gets about 2x slower on a small machine (measured). That
thread leads torch's one intra-op pool, sized to `--cpu-threads` (default: every core this process may run
on); kvserve's own C++ CPU kernels run on it too, between torch's ops, so no second pool exists.
Calls other than steps (sleep, wake up, collective RPC) arrive as RunnerCall messages and run on the same
thread between steps; their replies go to the router, which hands them to the engine.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from kvserve.actors.base import Actor
from kvserve.errors import ErrorInfo, InvalidRequestError
from kvserve.executor import Executor
from kvserve.messages import ExecuteBatch, RunnerCall, RunnerReply
from kvserve.model.step_result import StepResult


def default_cpu_threads() -> int:
    """Every core of this process's affinity mask (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0))


def runner_thread(cpu_threads: int | None = None) -> ThreadPoolExecutor:
    """The one thread that touches torch; build the ModelRunner on it too. torch's intra-op pool gets
    cpu_threads threads (default: default_cpu_threads())."""
    threads = cpu_threads or default_cpu_threads()
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="kvserve-runner", initializer=torch.set_num_threads, initargs=(threads,)
    )


class RunnerActor(Actor):
    name = "runner"

    def __init__(self, executor: Executor, thread: ThreadPoolExecutor, scheduler: Actor, router: Actor) -> None:
        super().__init__()
        self.executor = executor
        self.scheduler = scheduler
        self.router = router
        self.thread = thread
        self.waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvserve-step-wait")
        # Launched steps whose results are not sent yet, oldest first: runner-thread futures of StepResults.
        self.undelivered: deque[asyncio.Future] = deque()
        self._waiting: asyncio.Future | None = None  # the waiter thread's wait for undelivered[0]'s result
        self._drained = asyncio.Event()  # set while nothing is undelivered
        self._drained.set()
        self.failed = False
        self.num_returned_early = 0  # steps whose launch returned before the device had finished them
        self.handles(ExecuteBatch, self.on_execute)
        self.handles(RunnerCall, self.on_call)

    def on_execute(self, batch: ExecuteBatch) -> None:
        """Queues the batch on the runner thread without waiting for it: with async scheduling the next batch
        is queued while this one runs, so the thread starts it the moment this one is launched, with no hop
        through the event loop in between (at one stream on CPU that hop was most of the idle time between
        steps). The thread runs its queue in order, and results are sent in that order."""
        launched = asyncio.get_running_loop().run_in_executor(self.thread, self._launch, batch)
        self.undelivered.append(launched)
        self._drained.clear()
        launched.add_done_callback(self._deliver_ready)

    def _launch(self, batch: ExecuteBatch) -> StepResult:
        """On the runner thread."""
        result = self.executor.execute(batch)
        if not result.ready():
            self.num_returned_early += 1
        return result

    def _deliver_ready(self, _: object = None) -> None:
        """Sends, in order, the results at the head of the queue that are on the host; the first one still on
        its way from the device is waited for on the waiter thread, whose end calls this again."""
        if self.failed:
            self._drop_finished()
            return
        while self.undelivered and self._waiting is None:
            launched = self.undelivered[0]
            if not launched.done() or launched.cancelled():
                return  # its own callback comes (a cancelled one: the actor is stopping)
            if launched.exception() is not None:
                self._fail(launched.exception())
                return
            result: StepResult = launched.result()
            if not result.ready():
                self._waiting = asyncio.get_running_loop().run_in_executor(self.waiter, result.wait)
                self._waiting.add_done_callback(self._on_waited)
                return
            self.undelivered.popleft()
            try:
                host_result = result.wait()
            except Exception as e:  # the device failed the step
                self._fail(e)
                return
            self.scheduler.send(host_result)
        if not self.undelivered:
            self._drained.set()

    def _on_waited(self, waited: asyncio.Future) -> None:
        self._waiting = None
        if waited.cancelled():
            return
        if waited.exception() is not None:  # the device failed the step
            self._fail(waited.exception())
        else:
            self._deliver_ready()

    def _fail(self, error: BaseException) -> None:
        """Batches queued behind a failed one report nothing: the engine is already failing."""
        self.failed = True
        self._drop_finished()
        self.fail(error)

    def _drop_finished(self) -> None:
        """After a failure: forgets the launches that have finished, taking their errors (the steps queued
        behind the failed one fail too), which asyncio would otherwise log as never retrieved."""
        while self.undelivered and self.undelivered[0].done():
            launched = self.undelivered.popleft()
            if not launched.cancelled():
                launched.exception()

    async def on_call(self, call: RunnerCall) -> None:
        """A failing call is the caller's error, not the runner's: it is replied, and the actor lives on.
        A collective RPC's result is the list of every rank's result; the engine's own calls take rank 0's.
        Calls run between steps: after every launched step has finished (sleep releases their memory)."""
        await self._drained.wait()
        try:
            internal = not call.collective_rpc
            work = functools.partial(self.executor.call, call.method, call.args, call.kwargs, internal=internal)
            results = await asyncio.get_running_loop().run_in_executor(self.thread, work)
            reply = RunnerReply(call.call_id, results if call.collective_rpc else results[0])
        except (TypeError, ValueError) as e:  # arguments the method does not take
            reply = RunnerReply(call.call_id, error=ErrorInfo.of(InvalidRequestError(f"{call.method}: {e}")))
        except Exception as e:
            reply = RunnerReply(call.call_id, error=ErrorInfo.of(e))
        self.router.send(reply)

    async def stop(self) -> None:
        await super().stop()
        self.waiter.shutdown(wait=True)
        self.thread.shutdown(wait=True)
