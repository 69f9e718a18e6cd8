"""kvserve's app on hypercorn in a background thread, so a test can inspect the engine it serves."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from hypercorn.asyncio import serve

from kvserve.api.app import create_app
from kvserve.api.server import hypercorn_config
from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from tests.api.server_process import free_port

T = TypeVar("T")


class InProcessServer:
    def __init__(
        self,
        config: EngineConfig,
        model_name: str = "tiny",
        settings: Callable[[AsyncEngine], ServerSettings] | None = None,
    ) -> None:
        self.port = free_port()
        self.config = config
        self.model_name = model_name
        self.make_settings = settings or (
            lambda engine: ServerSettings(served_model_names=(model_name,), model_root=config.model, chat_template=None)
        )
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: AsyncEngine | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(120) or self.error:
            raise RuntimeError(f"server did not start: {self.error!r}")
        self._wait_listening(30.0)

    def _wait_listening(self, timeout: float) -> None:
        """hypercorn binds after the engine is up; connect until it answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced to the test thread
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.engine = await AsyncEngine.start(self.config)
        settings = self.make_settings(self.engine)
        config = hypercorn_config("127.0.0.1", self.port, "warning", settings)
        self.loop.call_soon(self.ready.set)
        try:
            await serve(create_app(self.engine, settings), config, shutdown_trigger=self.stopping.wait)
        finally:
            await self.engine.shutdown()

    def call(self, fn: Callable[[], T]) -> T:
        """Runs fn on the server's event loop (engine state is only read there)."""

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)
