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
        self.undelivered: deque[StepResult] = deque()  # launched steps whose results are not sent yet, oldest first
        self._delivering: asyncio.Task | None = None  # waits for undelivered[0] on the waiter thread
        self.num_launched_behind = 0  # steps launched while an earlier step's result was still on the device
        self.handles(ExecuteBatch, self.on_execute)
        self.handles(RunnerCall, self.on_call)

    async def on_execute(self, batch: ExecuteBatch) -> None:
        loop = asyncio.get_running_loop()
        self.num_launched_behind += bool(self.undelivered)
        self.undelivered.append(await loop.run_in_executor(self.thread, self.executor.execute, batch))
        if self._delivering is not None:
            return  # it delivers this one too, in order
        while self.undelivered and self.undelivered[0].ready():
            self.scheduler.send(self.undelivered.popleft().wait())
        if self.undelivered:
            self._delivering = loop.create_task(self._deliver(), name="runner-deliver")

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.undelivered:
                result = await loop.run_in_executor(self.waiter, self.undelivered[0].wait)
                self.undelivered.popleft()
                self.scheduler.send(result)
        except Exception as e:  # the device failed the step
            self.fail(e)
        finally:
            self._delivering = None

    async def on_call(self, call: RunnerCall) -> None:
        """A failing call is the caller's error, not the runner's: it is replied, and the actor lives on.
        A collective RPC's result is the list of every rank's result; the engine's own calls take rank 0's.
        Calls run between steps: after every launched step has finished (sleep releases their memory)."""
        if self._delivering is not None:
            await asyncio.wait([self._delivering])
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
        if self._delivering is not None:
            self._delivering.cancel()
        self.waiter.shutdown(wait=True)
        self.thread.shutdown(wait=True)
