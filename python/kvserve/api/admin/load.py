"""GET /load: HTTP requests in flight on the serving routes (vLLM's server_load), counted with
--enable-server-load-tracking (without it the count stays 0, as in vLLM).

A request counts from its arrival until its response, streamed or not, is fully sent: the count wraps the
whole ASGI call. Serving routes are the POST routes other than the operational ones below.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from kvserve.api.responses import json_response

bp = Blueprint("admin_load", __name__)

_CONFIG_KEY = "KVSERVE_LOAD"
NOT_LOAD = frozenset({"/ping", "/sleep", "/wake_up", "/collective_rpc"})


class LoadTracker:
    """ASGI middleware counting the serving requests in flight."""

    def __init__(self, app) -> None:
        self.app = app
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        counted = scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") not in NOT_LOAD
        if not counted:
            return await self.app(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def install_load_tracking(app) -> None:
    tracker = LoadTracker(app.asgi_app)
    app.asgi_app = tracker
    app.config[_CONFIG_KEY] = tracker


@bp.get("/load")
async def load() -> Response:
    tracker: LoadTracker | None = current_app.config.get(_CONFIG_KEY)
    return json_response({"server_load": tracker.in_flight if tracker is not None else 0})
