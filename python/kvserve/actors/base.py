"""Actor base: one asyncio.Queue inbox, handlers chosen by message type, bursts drained before a pause.

An actor never shares mutable state with another; it only sends messages. A handler that raises is a bug
or a broken device: the actor stops and reports the error to its supervisor (the engine), which fails
every open request and marks itself unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None] | None]


class _Stop:
    pass


class Actor:
    name = "actor"

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self._handlers: dict[type, Handler] = {}
        self._on_failure: Callable[[Actor, BaseException], None] | None = None
        self._task: asyncio.Task | None = None

    def handles(self, message_type: type, handler: Handler) -> None:
        self._handlers[message_type] = handler

    def send(self, message: object) -> None:
        self.inbox.put_nowait(message)

    def start(self, on_failure: Callable[[Actor, BaseException], None]) -> None:
        self._on_failure = on_failure
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        self.send(_Stop())
        await asyncio.shield(self._task)

    def fail(self, error: BaseException) -> None:
        """Reports a failure found outside a handler (a watchdog timer): the actor stops as if a handler raised."""
        logger.error("%s actor failed: %s", self.name, error)
        self.kill()
        if self._on_failure is not None:
            self._on_failure(self, error)

    def kill(self) -> None:
        """Stops the actor without waiting for the handler it is in (which may never return)."""
        if self._task is not None:
            self._task.cancel()

    async def after_burst(self) -> None:
        """Called once the inbox is empty after a run of messages (e.g. to start the next step)."""

    async def _run(self) -> None:
        try:
            while True:
                message = await self.inbox.get()
                while True:
                    if isinstance(message, _Stop):
                        return
                    result = self._handlers[type(message)](message)
                    if result is not None:
                        await result
                    if self.inbox.empty():
                        break
                    message = self.inbox.get_nowait()
                await self.after_burst()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            logger.exception("%s actor failed", self.name)
            if self._on_failure is not None:
                self._on_failure(self, e)
