"""Background responses: the request runs in a task after the POST has answered; GET polls the stored entry,
cancel aborts the task (and with it the engine request, whose KV blocks are freed at once).

A streamed background response keeps its events in its entry, one per sequence number, so the POST's stream
and any later GET ?stream=true&starting_after=N read the same events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from kvserve.api.frontend.generations import collect, open_all
from kvserve.api.openai.responses.protocol import ResponseError
from kvserve.api.openai.responses.response_object import ResponseHeader
from kvserve.api.openai.responses.shaper import ResponsesShaper
from kvserve.api.openai.responses.store import ResponseStore, StoredResponse
from kvserve.errors import KvserveError
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest

if TYPE_CHECKING:  # annotations only: the API modules import (and are tested with fakes) without the engine
    from kvserve.engine import AsyncEngine

logger = logging.getLogger(__name__)

ShaperFactory = Callable[[list[RequestOutput]], ResponsesShaper]


async def run_in_background(
    entry: StoredResponse,
    store: ResponseStore,
    header: ResponseHeader,
    engine: AsyncEngine,
    requests: Sequence[EngineRequest],
    make_shaper: ShaperFactory,
) -> None:
    """The whole run of a background response; the shaper stores the finished response."""
    try:
        generations, accepted = await open_all(engine, requests)
        if entry.response.status == "queued":
            entry.response = header.response("in_progress")
        shaper = make_shaper(accepted)
        if entry.events is None:
            shaper.response(await collect(generations, accepted))
        else:
            async for chunk in shaper.stream(generations):
                entry.events += [frame + b"\n\n" for frame in chunk.split(b"\n\n") if frame]
                entry.changed.set()
    except KvserveError as e:
        store.finish(header.response("failed", error=ResponseError(code=e.error_type, message=e.message)))
    except Exception as e:
        logger.exception("background response %s failed", header.id)
        store.finish(header.response("failed", error=ResponseError(code="server_error", message=str(e))))
    finally:
        entry.task = None
        entry.changed.set()


async def replay(entry: StoredResponse, starting_after: int | None) -> AsyncIterator[bytes]:
    """A streamed background response's events after sequence number `starting_after`, then those still to
    come, until its run ends."""
    assert entry.events is not None
    position = 0 if starting_after is None else starting_after + 1
    while True:
        entry.changed.clear()
        while position < len(entry.events):
            yield entry.events[position]
            position += 1
        if entry.task is None:
            return
        await entry.changed.wait()


async def cancel(entry: StoredResponse) -> None:
    """Marks the response cancelled and stops its run; the run's generations abort their engine requests."""
    entry.response = entry.response.model_copy(update={"status": "cancelled"})
    task = entry.task
    if task is not None:
        task.cancel()
        await asyncio.wait([task])  # its end, without its CancelledError
