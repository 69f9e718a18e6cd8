"""POST /v1/completions/render (one rendered request per prompt) and /v1/chat/completions/render (one):
the route's own handler runs with a RecordingEngine, so the answer is exactly what it would submit."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from quart import Blueprint, Response, request

from kvserve.api.context import ServingContext
from kvserve.api.openai.chat import create_chat_completion
from kvserve.api.openai.completions import create_completion
from kvserve.api.render.protocol import RenderedRequest
from kvserve.api.render.recording_engine import RecordingEngine, Rendered
from kvserve.api.responses import json_response
from kvserve.errors import KvserveError
from kvserve.request import PreparedRequest

bp = Blueprint("render", __name__)


def sampling_params_payload(prepared: PreparedRequest, n: int) -> dict[str, Any]:
    params = prepared.request.sampling
    payload = dataclasses.asdict(params)
    payload.update(
        n=n,
        max_tokens=prepared.max_tokens,
        logit_bias={str(token_id): bias for token_id, bias in params.logit_bias} or None,
    )
    return payload


async def render(route: Callable[[], Awaitable[Response]]) -> list[RenderedRequest]:
    """Runs `route` with a recording engine; its prepared requests, one per prompt (choices share one)."""
    ctx = ServingContext.current()
    raw_body = await request.get_data(cache=True)  # kept for the route, which reads it once
    recording = RecordingEngine(ctx.engine)
    try:
        with ServingContext(recording, ctx.settings).serving():
            await route()
    except Rendered:
        pass
    if recording.errors:
        raise recording.errors[0]
    if not recording.prepared:
        raise KvserveError("The route submitted no engine request to render.")
    body = orjson.loads(raw_body)  # a JSON object: the route validated it
    n = body.get("n") or 1
    model = ctx.model_name(body.get("model"))
    return [
        RenderedRequest(
            request_id=prepared.request_id,
            token_ids=prepared.prompt_token_ids,
            sampling_params=sampling_params_payload(prepared, n),
            model=model,
            stream=bool(body.get("stream")),
            stream_options=body.get("stream_options"),
            cache_salt=prepared.request.cache_salt,
            priority=prepared.request.priority,
        )
        for prepared in recording.prepared[::n]
    ]


@bp.post("/v1/chat/completions/render")
async def render_chat_completion() -> Response:
    (rendered,) = await render(create_chat_completion)
    return json_response(rendered)


@bp.post("/v1/completions/render")
async def render_completion() -> Response:
    return json_response([rendered.model_dump() for rendered in await render(create_completion)])
