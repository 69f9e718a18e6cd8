"""Running the engine requests of one API request together: submit all, await acceptance, merge outputs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest

Generation = AsyncIterator[RequestOutput]

if TYPE_CHECKING:  # annotations only: the API modules import (and are tested with fakes) without the engine
    from kvserve.engine import AsyncEngine


async def open_all(
    engine: AsyncEngine, requests: Sequence[EngineRequest]
) -> tuple[list[Generation], list[RequestOutput]]:
    """Submits every request at once (so they share the first steps) and awaits each one's acceptance; if
    one is refused, the others are aborted and the error raised. Returns the generations and their first
    (accepted) outputs."""
    generations = [engine.generate(request) for request in requests]
    try:
        results = await asyncio.gather(*(anext(g) for g in generations), return_exceptions=True)
    except BaseException:  # cancelled while waiting: the client went away
        await close_all(generations)
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_all(generations)
        raise errors[0]
    return generations, results


async def close_all(generations: Sequence[Generation]) -> None:
    for generation in generations:
        with contextlib.suppress(Exception):
            await generation.aclose()


async def merge(generations: Sequence[Generation]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(index, output) from all generations as they come; leaving early aborts the unfinished ones."""
    pending = {asyncio.ensure_future(anext(g)): i for i, g in enumerate(generations)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = pending.pop(task)
                try:
                    output = task.result()
                except StopAsyncIteration:
                    continue
                yield index, output
                pending[asyncio.ensure_future(anext(generations[index]))] = index
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await close_all(generations)


async def collect(generations: Sequence[Generation], accepted: list[RequestOutput]) -> list[RequestOutput]:
    """Runs every generation to the end; returns each one's outputs merged into its accepted output."""
    async for index, output in merge(generations):
        accepted[index].merge(output)
    return accepted
