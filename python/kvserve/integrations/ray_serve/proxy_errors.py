"""Ray's proxy's own error answers, in the error envelope of the API family the path belongs to.

Ray's HTTP proxy answers some requests itself, in plain text: 503 "Request dropped due to backpressure"
when a deployment's `max_queued_requests` is reached, 503 while no replica is up, 408 past its
request_timeout_s, 404 for a path no application serves, 500 when a replica dies mid-request. SDK clients
expect their API's error JSON; this ASGI middleware rewrites those plain-text errors (kvserve's own answers
are JSON and pass untouched). Ray installs it in each proxy from an import path in an environment variable,
which must be set where the Ray node starts:

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=kvserve.integrations.ray_serve:proxy_middlewares ray start --head

This module is imported by the proxy: it loads the API layer's envelopes, never the engine.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.types import Message, Receive, Scope, Send

from kvserve.api.app import API_FAMILIES
from kvserve.api.envelopes import ErrorReport
from kvserve.integrations.ray_serve.http_middleware import HttpMiddleware

_BODY_HEADERS = (b"content-type", b"content-length")  # rewritten with the body; the rest (Retry-After) stay
_ERROR_TYPES = {
    404: "NotFoundError",
    408: "RequestTimeoutError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def proxy_middlewares() -> list[Middleware]:
    """What RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH names: Ray calls it in each proxy at start."""
    return [Middleware(ProxyErrorEnvelope)]


class ProxyErrorEnvelope(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: dict[str, Any] | None = None  # a plain-text error's start, sent once its body is complete
        body = b""

        async def send_enveloped(message: Message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and _is_plain_text_error(message):
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            status = held["status"]
            report = ErrorReport(body.decode(errors="replace"), status, _ERROR_TYPES.get(status, "APIError"))
            enveloped = API_FAMILIES.family_for(None, scope["path"]).envelope.body(report)
            kept = [(name, value) for name, value in held.get("headers", []) if name not in _BODY_HEADERS]
            headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(enveloped)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": enveloped})

        await self.app(scope, receive, send_enveloped)


def _is_plain_text_error(start: Message) -> bool:
    headers = dict(start.get("headers", []))
    return start["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"text/plain")
