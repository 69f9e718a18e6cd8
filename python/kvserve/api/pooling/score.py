"""POST /score, /v1/score (vLLM's score API) and /rerank, /v1/rerank, /v2/rerank (Jina's and Cohere's
rerank shape): both score text pairs (see scoring.py); rerank orders documents by their score."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.protocol_base import UsageInfo
from kvserve.api.pooling.encode import EncodeOptions
from kvserve.api.pooling.protocol import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreInputs,
    ScoreRequest,
    ScoreResponse,
    ScoreResponseData,
)
from kvserve.api.pooling.scoring import score
from kvserve.api.responses import json_response

bp = Blueprint("pooling_score", __name__)


def _texts(side: ScoreInputs | None, param: str) -> list[str]:
    require(side is not None and side != [], f"{param} must not be empty.", param)
    return [side] if isinstance(side, str) else list(side)


@bp.post("/score")
@bp.post("/v1/score")
async def create_score() -> Response:
    return json_response(await score_texts(await parse_json_body(ScoreRequest)))


async def score_texts(body: ScoreRequest) -> ScoreResponse:
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    first, second = body.sides()
    scores, num_tokens = await score(
        ctx, _texts(first, "text_1"), _texts(second, "text_2"), EncodeOptions.of(body), body.use_activation is not False
    )
    data = [ScoreResponseData(index=i, score=value) for i, value in enumerate(scores)]
    return ScoreResponse(model=model, data=data, usage=UsageInfo(prompt_tokens=num_tokens, total_tokens=num_tokens))


@bp.post("/rerank")
@bp.post("/v1/rerank")
@bp.post("/v2/rerank")
async def create_rerank() -> Response:
    return json_response(await rerank(await parse_json_body(RerankRequest)))


async def rerank(body: RerankRequest) -> RerankResponse:
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    documents = body.document_texts()
    require(bool(documents), "documents must not be empty.", "documents")
    require(body.top_n is None or body.top_n >= 0, f"top_n must be non-negative, got {body.top_n}.", "top_n")
    scores, num_tokens = await score(
        ctx, [body.query], documents, EncodeOptions.of(body), body.use_activation is not False
    )
    order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
    if body.top_n:
        order = order[: body.top_n]
    results = [
        RerankResult(
            index=i,
            document=RerankDocument(text=documents[i]) if body.return_documents else None,
            relevance_score=scores[i],
        )
        for i in order
    ]
    return RerankResponse(
        model=model, usage=RerankUsage(prompt_tokens=num_tokens, total_tokens=num_tokens), results=results
    )
