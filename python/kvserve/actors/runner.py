"""RunnerActor: executes steps on a dedicated thread so the event loop stays free while the model runs.

All torch work, model loading included, happens on that one thread: once torch runs on two threads, their
OpenMP teams compete for the cores and every op gets about 2x slower on a small machine (measured).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from kvserve.actors.base import Actor
from kvserve.messages import ExecuteBatch
from kvserve.model.runner import ModelRunner


def runner_thread() -> ThreadPoolExecutor:
    """The one thread that touches torch; build the ModelRunner on it too."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvserve-runner")


class RunnerActor(Actor):
    name = "runner"

    def __init__(self, runner: ModelRunner, thread: ThreadPoolExecutor, scheduler: Actor) -> None:
        super().__init__()
        self.runner = runner
        self.scheduler = scheduler
        self.thread = thread
        self.handles(ExecuteBatch, self.on_execute)

    async def on_execute(self, batch: ExecuteBatch) -> None:
        result = await asyncio.get_running_loop().run_in_executor(self.thread, self.runner.execute, batch)
        self.scheduler.send(result)

    async def stop(self) -> None:
        await super().stop()
        self.thread.shutdown(wait=True)
