"""Limits on what a client sends before any route runs: the number and size of headers (the body's size is
--max-request-body-bytes, Quart's MAX_CONTENT_LENGTH). Beyond them: 431 (or hypercorn's 400 for a header
block it cannot buffer) and 413, never a buffered megabyte."""

from __future__ import annotations

from hypercorn.config import Config as HypercornConfig
from quart import request
from werkzeug.exceptions import RequestHeaderFieldsTooLarge

MAX_HEADER_COUNT = 100
# Request line plus headers: what h11 buffers before the headers end, and HTTP/2's header list size.
MAX_HEADER_BYTES = 32 << 10


def limit_headers(config: HypercornConfig) -> None:
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.h2_max_header_list_size = MAX_HEADER_BYTES


async def check_header_count() -> None:
    """Quart's before_request hook: too many headers is 431, in the envelope of the route's family."""
    if len(request.headers) > MAX_HEADER_COUNT:
        raise RequestHeaderFieldsTooLarge(
            f"The request has {len(request.headers)} headers; at most {MAX_HEADER_COUNT} are accepted."
        )
