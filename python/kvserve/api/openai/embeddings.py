"""POST /v1/embeddings (OpenAI's embeddings, with vLLM's chat form and extras)."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.embeddings_protocol import EmbeddingRequest, EmbeddingResponse, EmbeddingResponseData
from kvserve.api.pooling.encode import EncodeOptions, embed_params, encode, request_prompts
from kvserve.api.pooling.vectors import encode_vector
from kvserve.api.responses import json_response

bp = Blueprint("openai_embeddings", __name__)


@bp.post("/v1/embeddings")
async def create_embedding() -> Response:
    return json_response(await embeddings(await parse_json_body(EmbeddingRequest)))


async def embeddings(body: EmbeddingRequest) -> EmbeddingResponse:
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    prompts, add_special_tokens = request_prompts(body, ctx)
    params = embed_params(ctx, body.dimensions, body.normalize_or_default())
    pooled = await encode(ctx, prompts, params, EncodeOptions.of(body, add_special_tokens))
    data = [
        EmbeddingResponseData(index=i, embedding=encode_vector(vector, body.encoding()))
        for i, vector in enumerate(pooled.values)
    ]
    return EmbeddingResponse(model=model, data=data, usage=pooled.usage)
