"""Serving the app with hypercorn on uvloop, with a clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from kvserve.api.app import create_app
from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine

logger = logging.getLogger(__name__)


SettingsFactory = Callable[[AsyncEngine], ServerSettings]


async def run_server(
    engine_config: EngineConfig, make_settings: SettingsFactory, host: str, port: int, log_level: str
) -> None:
    """Starts the engine (model load included), then serves until a signal asks to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = await AsyncEngine.start(engine_config)
    try:
        settings = make_settings(engine)
        app = create_app(engine, settings)
        config = HypercornConfig()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.loglevel = log_level.upper()
        config.accesslog = "-" if log_level == "debug" else None
        config.graceful_timeout = 5.0
        logger.info("serving %s on http://%s:%d", settings.model_name, host, port)
        await serve(app, config, shutdown_trigger=stop.wait)
    finally:
        await engine.shutdown()


def serve_forever(
    engine_config: EngineConfig, make_settings: SettingsFactory, host: str, port: int, log_level: str
) -> None:
    import uvloop

    uvloop.run(run_server(engine_config, make_settings, host, port, log_level))
