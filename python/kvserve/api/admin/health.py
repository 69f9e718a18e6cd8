"""GET /health (200, or 503 once the engine is dead), GET|POST /ping (SageMaker), GET /version."""

from __future__ import annotations

from quart import Blueprint, Response

import kvserve
from kvserve.api.context import ServingContext
from kvserve.api.responses import json_response

bp = Blueprint("admin_health", __name__)


@bp.get("/health")
async def health() -> Response:
    return Response(status=200 if ServingContext.current().engine.is_healthy else 503)


@bp.route("/ping", methods=["GET", "POST"])
async def ping() -> Response:
    return await health()


@bp.get("/version")
async def version() -> Response:
    return json_response({"version": kvserve.__version__})
