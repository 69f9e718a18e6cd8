"""Sleep mode (with --enable-dev-endpoints; sleeping needs --enable-sleep-mode too):

    POST /sleep?level=1|2     level 1: KV cache freed, weights to host memory; level 2: weights freed too
    POST /wake_up[?tags=weights&tags=kv_cache]
    GET  /is_sleeping         {"is_sleeping": bool}

While asleep every other request is answered 503. The engine does the work on the runner's thread.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from kvserve.api.context import ServingContext
from kvserve.api.responses import json_response
from kvserve.errors import InvalidRequestError

bp = Blueprint("admin_sleep", __name__)


@bp.post("/sleep")
async def sleep() -> Response:
    raw_level = request.args.get("level", "1")
    try:
        level = int(raw_level)
    except ValueError:
        raise InvalidRequestError(f"level must be 1 or 2, got {raw_level!r}.", "level") from None
    await ServingContext.current().engine.sleep(level)
    return Response(status=200)


@bp.post("/wake_up")
async def wake_up() -> Response:
    tags = request.args.getlist("tags") or None
    await ServingContext.current().engine.wake_up(tags)
    return Response(status=200)


@bp.get("/is_sleeping")
async def is_sleeping() -> Response:
    return json_response({"is_sleeping": ServingContext.current().engine.is_sleeping})
