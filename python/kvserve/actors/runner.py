"""RunnerActor: executes steps on a dedicated thread so the event loop stays free while the model runs.

It drives an Executor: the ModelRunner itself (TP=1) or tensor-parallel worker processes, which the thread
then waits on.

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
from concurrent.futures import ThreadPoolExecutor

import torch

from kvserve.actors.base import Actor
from kvserve.errors import ErrorInfo, InvalidRequestError
from kvserve.executor import Executor
from kvserve.messages import ExecuteBatch, RunnerCall, RunnerReply


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
        self.failed = False
        self.handles(ExecuteBatch, self.on_execute)
        self.handles(RunnerCall, self.on_call)

    def on_execute(self, batch: ExecuteBatch) -> None:
        """Queues the batch on the thread without waiting for it: with async scheduling the next batch is
        queued while this one runs, so the thread starts it the moment this one ends, with no hop through
        the event loop in between (at one stream that hop was most of the idle time between steps). The
        thread runs its queue in order, so results (and RunnerCalls) keep the order they were sent in."""
        future = asyncio.get_running_loop().run_in_executor(self.thread, self.executor.execute, batch)
        future.add_done_callback(self._on_executed)

    def _on_executed(self, future: asyncio.Future) -> None:
        if future.cancelled() or self.failed:
            return  # a batch queued behind a failed one: the engine is already failing
        error = future.exception()
        if error is not None:
            self.failed = True
            self.fail(error)
        else:
            self.scheduler.send(future.result())

    async def on_call(self, call: RunnerCall) -> None:
        """A failing call is the caller's error, not the runner's: it is replied, and the actor lives on.
        A collective RPC's result is the list of every rank's result; the engine's own calls take rank 0's."""
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
        self.thread.shutdown(wait=True)
