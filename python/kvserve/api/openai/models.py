"""GET /v1/models and GET /v1/models/<id>."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.openai.protocol_base import random_id
from kvserve.api.responses import json_response
from kvserve.errors import NotFoundError

bp = Blueprint("openai_models", __name__)


def model_card(name: str, ctx: ServingContext, created: int) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "kvserve",
        "root": ctx.settings.model_root,
        "parent": None,
        "max_model_len": ctx.engine.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{random_id()}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


@bp.get("/v1/models")
async def list_models() -> Response:
    ctx = ServingContext.current()
    created = ctx.engine.started_at
    return json_response(
        {"object": "list", "data": [model_card(n, ctx, created) for n in ctx.settings.served_model_names]}
    )


@bp.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    ctx = ServingContext.current()
    if model_id not in ctx.settings.served_model_names:
        raise NotFoundError(f"The model `{model_id}` does not exist.", "model")
    return json_response(model_card(model_id, ctx, ctx.engine.started_at))
