"""POST /pooling: the model's raw pooled output per input (an embedding, per-token embeddings, or class
probabilities), as vLLM's pooling API returns it."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.pooling.capabilities import CLASSIFY, EMBED, TOKEN_EMBED, served_apis
from kvserve.api.pooling.encode import EncodeOptions, embed_params, encode, request_prompts
from kvserve.api.pooling.protocol import PoolingRequest, PoolingResponse, PoolingResponseData
from kvserve.api.pooling.vectors import encode_vector
from kvserve.api.responses import json_response
from kvserve.request import PoolingParams

bp = Blueprint("pooling_pool", __name__)


@bp.post("/pooling")
async def create_pooling() -> Response:
    return json_response(await pool(await parse_json_body(PoolingRequest)))


def _params(body: PoolingRequest, ctx: ServingContext) -> PoolingParams:
    apis = served_apis(ctx.engine)
    task = body.task or next(t for t in (EMBED, TOKEN_EMBED, CLASSIFY) if t in apis)
    require(
        task in apis or (task == TOKEN_EMBED and EMBED in apis),
        f"Task {task} is not supported by this model.",
        "task",
    )
    if task == CLASSIFY:
        return PoolingParams(kind="classify", activation=body.use_activation is not False)
    params = embed_params(ctx, body.dimensions, body.normalize_or_default())
    return PoolingParams(kind="embed", pooling="all", normalize=params.normalize) if task == TOKEN_EMBED else params


async def pool(body: PoolingRequest) -> PoolingResponse:
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    prompts, add_special_tokens = request_prompts(body, ctx)
    pooled = await encode(ctx, prompts, _params(body, ctx), EncodeOptions.of(body, add_special_tokens))
    data = [
        PoolingResponseData(index=i, data=encode_vector(vector, body.encoding()))
        for i, vector in enumerate(pooled.values)
    ]
    return PoolingResponse(model=model, data=data, usage=pooled.usage)
