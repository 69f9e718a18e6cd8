"""POST /invocations (SageMaker): the body's shape picks the route, among those the served model answers.

The candidates, in vLLM's order: chat completions (`messages`) and completions (`prompt`) for generative
models; embeddings (`input` or `messages`), classification (`input` or `messages`), score (`text_1`/`text_2`,
`data_1`/`data_2` or `queries`/`documents`), rerank (`query` and `documents`) and pooling (`input`) for pooling
models. The first candidate whose fields are present handles the request, exactly as its own route would
(it reads the body again); none: a 400 naming the shapes the model accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response, current_app, request

from kvserve.api.context import ServingContext
from kvserve.api.json_body import json_object
from kvserve.api.pooling.capabilities import CLASSIFY, EMBED, GENERATE, POOLING, SCORE, served_apis
from kvserve.errors import InvalidRequestError

bp = Blueprint("sagemaker", __name__)

Body = dict[str, Any]


def _has(*fields: str) -> Callable[[Body], bool]:
    return lambda body: all(body.get(field) is not None for field in fields)


def _any_of(*tests: Callable[[Body], bool]) -> Callable[[Body], bool]:
    return lambda body: any(test(body) for test in tests)


@dataclass(frozen=True, slots=True)
class _Candidate:
    api: str
    type_name: str  # vLLM's request type, as its error message names it
    matches: Callable[[Body], bool]
    endpoint: str  # the view function that handles it


_INPUT = _any_of(_has("input"), _has("messages"))
_CANDIDATES = (
    _Candidate(GENERATE, "ChatCompletionRequest", _has("messages"), "openai_chat.create_chat_completion"),
    _Candidate(GENERATE, "CompletionRequest", _has("prompt"), "openai_completions.create_completion"),
    _Candidate(EMBED, "EmbeddingRequest", _INPUT, "openai_embeddings.create_embedding"),
    _Candidate(CLASSIFY, "ClassificationRequest", _INPUT, "pooling_classify.create_classification"),
    _Candidate(
        SCORE,
        "ScoreRequest",
        _any_of(_has("text_1", "text_2"), _has("data_1", "data_2"), _has("queries", "documents")),
        "pooling_score.create_score",
    ),
    _Candidate(SCORE, "RerankRequest", _has("query", "documents"), "pooling_score.create_rerank"),
    _Candidate(POOLING, "PoolingRequest", _INPUT, "pooling_pool.create_pooling"),
)


@bp.post("/invocations")
async def invocations() -> Response:
    body = json_object(await request.get_data(cache=True))  # cached: the chosen route reads the body again
    apis = served_apis(ServingContext.current().engine)
    candidates = [c for c in _CANDIDATES if c.api in apis]
    for candidate in candidates:
        if candidate.matches(body):
            return await current_app.view_functions[candidate.endpoint]()
    names = list(dict.fromkeys(c.type_name for c in candidates))
    raise InvalidRequestError(f"Cannot find suitable handler for request. Expected one of: {names}")
