"""RunnerActor: executes steps on a dedicated thread so the event loop stays free while the model runs."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from kvserve.actors.base import Actor
from kvserve.messages import ExecuteBatch
from kvserve.model.runner import ModelRunner


class RunnerActor(Actor):
    name = "runner"

    def __init__(self, runner: ModelRunner, scheduler: Actor) -> None:
        super().__init__()
        self.runner = runner
        self.scheduler = scheduler
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvserve-runner")
        self.handles(ExecuteBatch, self.on_execute)

    async def on_execute(self, batch: ExecuteBatch) -> None:
        result = await asyncio.get_running_loop().run_in_executor(self.thread, self.runner.execute, batch)
        self.scheduler.send(result)

    async def stop(self) -> None:
        await super().stop()
        self.thread.shutdown(wait=True)
