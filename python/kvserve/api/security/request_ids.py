"""--enable-request-id-headers: every response carries X-Request-Id (the client's, or a new one)."""

from __future__ import annotations

import uuid

from quart import Quart, Response, request


async def add_request_id(response: Response) -> Response:
    response.headers["X-Request-Id"] = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    return response


def install_request_ids(app: Quart) -> None:
    app.after_request(add_request_id)
