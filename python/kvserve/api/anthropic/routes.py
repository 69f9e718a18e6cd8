"""POST /v1/messages and POST /v1/messages/count_tokens (Anthropic's Messages API, as vLLM serves it)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kvserve.api.anthropic.conversion import conversation_of, output_constraint, tool_plan
from kvserve.api.anthropic.protocol import (
    CountTokensRequest,
    CountTokensResponse,
    MessagesRequest,
    message_id,
)
from kvserve.api.anthropic.shaper import MessageShaper
from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import render_conversation
from kvserve.api.frontend.engine_requests import admit
from kvserve.api.frontend.generations import collect, open_all
from kvserve.api.frontend.sampling import SamplingFields, sampling_params
from kvserve.api.json_body import parse_json_body
from kvserve.api.responses import json_response
from kvserve.api.streaming import stream_response
from kvserve.request import EngineRequest

bp = Blueprint("anthropic_messages", __name__)


@bp.post("/v1/messages")
async def create_message() -> Response:
    body = await parse_json_body(MessagesRequest)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    plan = tool_plan(body, ctx.settings)
    fields = SamplingFields(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        stop=tuple(body.stop_sequences or ()),
        structured=output_constraint(body, plan),
        # A tool parser reads markup that is made of special tokens in the models that use it.
        skip_special_tokens=not (plan.tools is not None and plan.tools.keeps_special_tokens),
    )
    params = sampling_params(fields, ctx)
    admit(ctx.engine, 1)  # before rendering: a full queue costs no template work
    prompt = render_conversation(conversation_of(body), ctx)
    request_id = message_id() if (given := request.headers.get("X-Request-Id")) is None else f"msg_{given}"
    # The chat template writes the special tokens (add_special_tokens off, as for chat completions).
    engine_request = EngineRequest(request_id, prompt, sampling=params, add_special_tokens=False)
    generations, accepted = await open_all(ctx.engine, [engine_request])
    shaper = MessageShaper(request_id, model, accepted[0], plan.message_parser(ctx.settings))
    if body.stream:
        return stream_response(shaper.events(generations))
    result = (await collect(generations, accepted))[0]
    return json_response(shaper.message(result))


@bp.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    """The prompt's length as the engine would tokenize it: the rendered conversation, tools included."""
    body = await parse_json_body(CountTokensRequest)
    ctx = ServingContext.current()
    ctx.model_name(body.model)
    prompt = render_conversation(conversation_of(body), ctx)
    token_ids = ctx.engine.tokenizer.encode(prompt, add_special_tokens=False)
    return json_response(CountTokensResponse(input_tokens=len(token_ids)))
