"""POST /v1/embed and /v2/embed (Cohere's embed API) over the served embedding model.

input_type picks the model's sentence-transformers prompt of that kind, when it has one (a search_query
uses the "search_query" prompt, else "query"; a search_document "search_document", else "document");
truncate END keeps the first tokens that fit, START the last ones, NONE refuses inputs that are too long.
"""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.cohere.protocol import (
    CohereApiVersion,
    CohereBilledUnits,
    CohereEmbedRequest,
    CohereEmbedResponse,
    CohereMeta,
)
from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.json_body import parse_json_body
from kvserve.api.pooling.encode import EncodeOptions, embed_params, encode
from kvserve.api.pooling.vectors import typed_embeddings
from kvserve.api.responses import json_response
from kvserve.request import Truncation

bp = Blueprint("cohere_embed", __name__)

_PROMPT_NAMES = {
    "search_query": ("search_query", "query"),
    "search_document": ("search_document", "document", "passage"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}
_TRUNCATE_SIDES = {"END": "right", "START": "left"}


@bp.post("/v1/embed")
async def create_embed_v1() -> Response:
    return json_response(await embed(await parse_json_body(CohereEmbedRequest), version=1))


@bp.post("/v2/embed")
async def create_embed_v2() -> Response:
    return json_response(await embed(await parse_json_body(CohereEmbedRequest), version=2))


def _prompt_prefix(input_type: str | None, ctx: ServingContext) -> str:
    pooler = ctx.engine.model_config.pooler
    if input_type is None or pooler is None:
        return ""
    return next((pooler.prompts[name] for name in _PROMPT_NAMES[input_type] if name in pooler.prompts), "")


async def embed(body: CohereEmbedRequest, version: int) -> CohereEmbedResponse:
    ctx = ServingContext.current()
    ctx.model_name(body.model)
    if body.images or body.inputs:
        raise NotImplementedFeature("image inputs are not supported: this server embeds texts only.", "images")
    require(bool(body.texts), "texts must not be empty.", "texts")
    require(all(body.texts), "texts must not contain empty strings.", "texts")
    prefix = _prompt_prefix(body.input_type, ctx)
    side = _TRUNCATE_SIDES.get(body.truncate)
    keep = -1 if body.max_tokens is None else body.max_tokens
    trunc = None if side is None else Truncation(keep, side)
    params = embed_params(ctx, body.output_dimension, None)
    options = EncodeOptions(body.request_id, body.priority, trunc)
    pooled = await encode(ctx, [prefix + text for text in body.texts], params, options)
    embedding_types = body.embedding_types or ["float"]
    by_type = version == 2 or body.embedding_types is not None
    return CohereEmbedResponse(
        response_type="embeddings_by_type" if by_type else "embeddings_floats",
        embeddings=typed_embeddings(pooled.values, embedding_types) if by_type else [v.tolist() for v in pooled.values],
        texts=body.texts,
        meta=CohereMeta(
            api_version=CohereApiVersion(version=str(version)),
            billed_units=CohereBilledUnits(input_tokens=pooled.num_prompt_tokens),
        ),
    )
