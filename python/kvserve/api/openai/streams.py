"""Running several engine requests for one HTTP request (n choices, several prompts)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from quart import Response

from kvserve.api.context import ServingContext
from kvserve.api.openai.protocol_base import now
from kvserve.api.openai.request_options import RequestOptions
from kvserve.api.responses import json_response
from kvserve.api.streaming import stream_response
from kvserve.engine import AsyncEngine
from kvserve.outputs import RequestOutput
from kvserve.sampling_params import SamplingParams

Generation = AsyncIterator[RequestOutput]


class Shaper(Protocol):
    """Turns one HTTP request's outputs into its response body or its SSE events."""

    def response(self, results: list[RequestOutput]) -> BaseModel: ...

    def stream(self, generations: list[Generation]) -> AsyncIterator[bytes]: ...


class ShaperBase:
    """What every shaper knows about its request: the body, options, answering model and settings."""

    def __init__(
        self, body: Any, options: RequestOptions, model: str, accepted: list[RequestOutput], ctx: ServingContext
    ) -> None:
        self.body = body
        self.options = options
        self.model = model
        self.created = now()
        self.accepted = accepted
        self.as_token_ids = bool(body.return_tokens_as_token_ids or ctx.settings.return_tokens_as_token_ids)
        self.fingerprint = ctx.settings.system_fingerprint


def start_generations(
    engine: AsyncEngine,
    body: Any,
    prompts: Sequence[str | list[int]],
    choice_params: Sequence[SamplingParams],
    request_id: str,
) -> list[Generation]:
    """One engine request per prompt and choice (engine id `<request id>-<prompt>-<choice>`), in choice order."""
    return [
        engine.generate(
            prompt,
            params,
            f"{request_id}-{i}-{j}",
            priority=body.priority,
            cache_salt=body.cache_salt,
            add_special_tokens=body.add_special_tokens,
            truncate_prompt_tokens=body.truncate_prompt_tokens,
            truncation_side=body.truncation_side or "left",
        )
        for i, prompt in enumerate(prompts)
        for j, params in enumerate(choice_params)
    ]


async def respond(
    shaper: Shaper, generations: list[Generation], accepted: list[RequestOutput], stream: bool
) -> Response:
    if stream:
        return stream_response(shaper.stream(generations))
    return json_response(shaper.response(await collect(generations, accepted)))


async def open_all(generations: list[Generation]) -> list[RequestOutput]:
    """Submits every request at once (so they share the first steps) and awaits each one's acceptance; if
    one is refused, the others are aborted and the error raised."""
    try:
        results = await asyncio.gather(*(anext(g) for g in generations), return_exceptions=True)
    except BaseException:  # cancelled while waiting: the client went away
        await close_all(generations)
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_all(generations)
        raise errors[0]
    return results


async def close_all(generations: list[Generation]) -> None:
    for generation in generations:
        with contextlib.suppress(Exception):
            await generation.aclose()


async def merge(generations: list[Generation]) -> AsyncIterator[tuple[int, RequestOutput]]:
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


async def collect(generations: list[Generation], accepted: list[RequestOutput]) -> list[RequestOutput]:
    """Runs every generation to the end; returns each one's outputs merged into one."""
    results = accepted
    async for index, output in merge(generations):
        results[index].merge(output)
    return results
