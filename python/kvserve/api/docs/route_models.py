"""Which pydantic models document which route, by endpoint (blueprint.function). A route without an entry
is still listed in /openapi.json, with a generic JSON body; a family adding a route adds its line here."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from kvserve.api.admin.collective_rpc import CollectiveRpcRequest, CollectiveRpcResponse
from kvserve.api.anthropic.protocol import CountTokensRequest, CountTokensResponse, Message, MessagesRequest
from kvserve.api.openai.chat_protocol import ChatCompletionRequest, ChatCompletionResponse
from kvserve.api.openai.completion_protocol import CompletionRequest, CompletionResponse
from kvserve.api.openai.responses.protocol import ResponseObject, ResponsesRequest
from kvserve.api.render.protocol import RenderedRequest
from kvserve.api.scoring.generative_protocol import GenerativeScoringRequest, GenerativeScoringResponse
from kvserve.api.tokenize.protocol import DetokenizeRequest, TokenizeRequest


@dataclass(frozen=True, slots=True)
class RouteModels:
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_is_list: bool = False
    summary: str | None = None


ROUTE_MODELS: dict[str, RouteModels] = {
    "openai_completions.create_completion": RouteModels(CompletionRequest, CompletionResponse, summary="Completions"),
    "openai_chat.create_chat_completion": RouteModels(
        ChatCompletionRequest, ChatCompletionResponse, summary="Chat completions"
    ),
    "anthropic_messages.create_message": RouteModels(MessagesRequest, Message, summary="Messages (Anthropic)"),
    "anthropic_messages.count_tokens": RouteModels(
        CountTokensRequest, CountTokensResponse, summary="Count a Messages request's input tokens (Anthropic)"
    ),
    "openai_responses.create_response": RouteModels(ResponsesRequest, ResponseObject, summary="Responses"),
    "openai_responses.retrieve_response": RouteModels(response=ResponseObject, summary="Retrieve a stored response"),
    "openai_responses.cancel_response": RouteModels(response=ResponseObject, summary="Cancel a background response"),
    "render.render_completion": RouteModels(CompletionRequest, RenderedRequest, True, "Render a completion request"),
    "render.render_chat_completion": RouteModels(
        ChatCompletionRequest, RenderedRequest, summary="Render a chat request"
    ),
    "generative_scoring.generative_scoring": RouteModels(
        GenerativeScoringRequest, GenerativeScoringResponse, summary="Generative scoring"
    ),
    "tokenize.tokenize": RouteModels(TokenizeRequest, summary="Tokenize a prompt or conversation"),
    "tokenize.detokenize": RouteModels(DetokenizeRequest, summary="Detokenize token ids"),
    "admin_collective_rpc.collective_rpc": RouteModels(
        CollectiveRpcRequest, CollectiveRpcResponse, summary="Call a model runner method (dangerous)"
    ),
}
