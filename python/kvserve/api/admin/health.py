"""GET /health and /health/ready (200, or 503 once the engine is dead or the server drains for shutdown),
GET|POST /ping (SageMaker), GET /version."""

from __future__ import annotations

from quart import Blueprint, Response

import kvserve
from kvserve.api.context import ServingContext
from kvserve.api.responses import json_response

bp = Blueprint("admin_health", __name__)


@bp.get("/health")
async def health() -> Response:
    # vLLM's /health is what load balancers probe: it turns 503 as soon as a drain starts, like /health/ready.
    return await ready()


@bp.get("/health/ready")
async def ready() -> Response:
    return Response(status=200 if ServingContext.current().engine.is_ready else 503)


@bp.route("/ping", methods=["GET", "POST"])
async def ping() -> Response:
    return await health()


@bp.get("/version")
async def version() -> Response:
    return json_response({"version": kvserve.__version__})
