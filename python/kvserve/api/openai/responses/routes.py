"""POST /v1/responses, and with --enable-responses-store GET /v1/responses/{id} (?stream=true&starting_after=N
for a streamed background response) and POST /v1/responses/{id}/cancel (vLLM's routes; it has no DELETE)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from quart import Blueprint, Response, request

from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import Conversation, render_conversation, with_reasoning_effort
from kvserve.api.frontend.engine_requests import admit
from kvserve.api.frontend.generations import open_all
from kvserve.api.frontend.sampling import sampling_params
from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.request_options import engine_requests, request_options
from kvserve.api.openai.responses.background import cancel, replay, run_in_background
from kvserve.api.openai.responses.input_items import chat_messages, input_items
from kvserve.api.openai.responses.protocol import ResponseObject, ResponsesRequest
from kvserve.api.openai.responses.response_object import ResponseHeader
from kvserve.api.openai.responses.shaper import ResponsesShaper
from kvserve.api.openai.responses.store import RUNNING, ResponseStore, StoredResponse, current_store, stored
from kvserve.api.openai.responses.text_format import output_constraint
from kvserve.api.openai.responses.tools import responses_tool_plan
from kvserve.api.openai.sampling import sampling_fields
from kvserve.api.responses import json_response
from kvserve.api.streaming import stream_response
from kvserve.errors import InvalidRequestError
from kvserve.outputs import RequestOutput

bp = Blueprint("openai_responses", __name__)

_STORE_NEEDED = "set --enable-responses-store when starting the server"


def _check_request(body: ResponsesRequest, store: ResponseStore | None) -> None:
    if body.prompt is not None:
        raise NotImplementedFeature("prompt templates are not supported.", "prompt")
    if body.conversation is not None:
        raise NotImplementedFeature("conversations are not supported; use previous_response_id.", "conversation")
    if "message.output_text.logprobs" in (body.include or ()):
        raise NotImplementedFeature("output logprobs are not supported on the Responses API.", "include")
    if body.background:
        require(body.store is not False, "background can only be used when `store` is true.", "background")
        require(
            store is not None,
            f"This server does not store responses and so does not run them in the background: {_STORE_NEEDED}.",
            "background",
        )
    effort = (body.reasoning or {}).get("effort")
    require(effort is None or isinstance(effort, str), "reasoning.effort must be a string.", "reasoning")


def _previous_items(body: ResponsesRequest, store: ResponseStore | None) -> list[dict[str, Any]]:
    if body.previous_response_id is None:
        return []
    previous = stored(store, body.previous_response_id)
    if previous.running:
        raise InvalidRequestError(
            f"Previous response '{body.previous_response_id}' is still {previous.response.status}.",
            "previous_response_id",
        )
    return previous.conversation()


@bp.post("/v1/responses")
async def create_response() -> Response:
    body = await parse_json_body(ResponsesRequest)
    ctx = ServingContext.current()
    store = current_store()
    model = ctx.model_name(body.model)
    _check_request(body, store)
    items = [*_previous_items(body, store), *input_items(body.input)]
    stream = bool(body.stream)
    options = request_options(body, ctx, stream=stream, request_id_prefix="resp_")
    plan, template_tools = responses_tool_plan(body.tools, body.tool_choice, body.parallel_tool_calls, ctx.settings)
    fields = sampling_fields(
        body,
        n=1,
        max_tokens=body.max_output_tokens,
        logprobs=None,
        prompt_logprobs=None,
        structured=output_constraint(body, plan),
        skip_special_tokens=False if plan.tools is not None and plan.tools.keeps_special_tokens else None,
    )
    params = sampling_params(fields, ctx)
    admit(ctx.engine, 1)  # before rendering: a full queue costs no template work
    conversation = Conversation(
        chat_messages(body.instructions, items),
        tools=template_tools,
        chat_template_kwargs=body.chat_template_kwargs,
    )
    prompt = render_conversation(with_reasoning_effort(conversation, (body.reasoning or {}).get("effort")), ctx)
    requests = engine_requests(body, options, [prompt], [params])
    keep = store is not None and body.store is not False
    header = ResponseHeader.of(body, options.request_id, model, params, keep)

    def make_shaper(accepted: list[RequestOutput], on_done: Callable[[ResponseObject], None]) -> ResponsesShaper:
        return ResponsesShaper(body, options, accepted, ctx, plan, header, on_done)

    if body.background:
        assert store is not None  # _check_request refused background without a store
        entry = StoredResponse(header.response("queued"), items, events=[] if stream else None)
        store.put(entry)
        entry.task = asyncio.create_task(
            run_in_background(
                entry, store, header, ctx.engine, requests, lambda accepted: make_shaper(accepted, store.finish)
            ),
            name=f"background {header.id}",
        )
        return stream_response(replay(entry, None)) if stream else json_response(entry.response)

    def on_done(response: ResponseObject) -> None:
        if keep:
            store.put(StoredResponse(response, items))

    generations, accepted = await open_all(ctx.engine, requests)
    return await make_shaper(accepted, on_done).respond(generations, stream)


@bp.get("/v1/responses/<response_id>")
async def retrieve_response(response_id: str) -> Response:
    entry = stored(current_store(), response_id)
    if request.args.get("stream", "false").lower() != "true":
        return json_response(entry.response)
    require(
        entry.events is not None,
        f"Response '{response_id}' was not created with background and stream: it has no events to stream.",
        "stream",
    )
    starting_after = request.args.get("starting_after")
    require(
        starting_after is None or starting_after.isdigit(),
        "starting_after must be a sequence number (a non-negative integer).",
        "starting_after",
    )
    return stream_response(replay(entry, None if starting_after is None else int(starting_after)))


@bp.post("/v1/responses/<response_id>/cancel")
async def cancel_response(response_id: str) -> Response:
    entry = stored(current_store(), response_id)
    require(
        entry.response.status in RUNNING,
        f"Cannot cancel response '{response_id}': it is {entry.response.status}; only background responses "
        "that are queued or in progress can be cancelled.",
        "response_id",
    )
    await cancel(entry)
    return json_response(entry.response)
