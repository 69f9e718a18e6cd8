"""Serving the app with hypercorn on uvloop; draining on SIGINT/SIGTERM, exiting non-zero when the engine dies.

SIGTERM (or SIGINT): /health and /health/ready answer 503 at once and new requests get 503 while the server
keeps listening (so load balancers see it leave); requests in flight get --shutdown-timeout seconds to
finish, the rest are aborted with a 503 error; then hypercorn stops and the process exits 0.
A dead engine (an actor raised, or a step outlived --engine-step-timeout): its requests have already failed;
hypercorn stops and the process exits 1 so a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from kvserve.api.app import create_app
from kvserve.api.limits import limit_headers
from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine

logger = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 1

SettingsFactory = Callable[[AsyncEngine], ServerSettings]


def hypercorn_config(host: str, port: int, log_level: str, settings: ServerSettings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.loglevel = log_level.upper()
    config.accesslog = "-" if log_level == "debug" else None
    # After the drain, what is left is flushing the aborted responses; at least a second for that.
    config.graceful_timeout = max(settings.shutdown_timeout, 1.0)
    limit_headers(config)
    return config


async def stop_when_done(engine: AsyncEngine, signalled: asyncio.Event, shutdown_timeout: float) -> None:
    """Returns when hypercorn should stop: after a signal and the drain, or when the engine died."""
    signal_wait = asyncio.ensure_future(signalled.wait())
    death_wait = asyncio.ensure_future(engine.died.wait())
    await asyncio.wait((signal_wait, death_wait), return_when=asyncio.FIRST_COMPLETED)
    signal_wait.cancel()
    death_wait.cancel()
    if engine.dead is None:
        logger.info("draining: %d requests in flight, up to %g s", engine.num_open_requests, shutdown_timeout)
        await engine.drain(shutdown_timeout)


async def run_server(
    engine_config: EngineConfig, make_settings: SettingsFactory, host: str, port: int, log_level: str
) -> int:
    """Starts the engine (model load included), then serves until a signal or the engine's death; returns the
    exit code."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    engine = await AsyncEngine.start(engine_config)
    try:
        settings = make_settings(engine)
        app = create_app(engine, settings)
        config = hypercorn_config(host, port, log_level, settings)
        logger.info("serving %s on http://%s:%d", settings.model_name, host, port)
        await serve(app, config, shutdown_trigger=lambda: stop_when_done(engine, signalled, settings.shutdown_timeout))
    finally:
        await engine.shutdown()
    if engine.dead is not None:
        logger.error("exiting: %s", engine.dead.message)
        return EXIT_ENGINE_DEAD
    return 0


def serve_forever(
    engine_config: EngineConfig, make_settings: SettingsFactory, host: str, port: int, log_level: str
) -> None:
    import uvloop

    code = uvloop.run(run_server(engine_config, make_settings, host, port, log_level))
    if code != 0:
        # A dead engine's runner thread may be stuck in a step: leave without joining it.
        logging.shutdown()
        os._exit(code)
