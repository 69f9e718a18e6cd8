"""Streamed (SSE) responses: no response timeout, and an error after the start becomes an error event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from quart import Response

from kvserve.api.errors import error_body
from kvserve.api.sse import DONE
from kvserve.errors import KvserveError

logger = logging.getLogger(__name__)


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event
    except KvserveError as e:
        yield b"data: " + error_body(e.message, e.error_type, e.status_code, e.param) + b"\n\n"
        yield DONE
    except Exception as e:  # never a broken connection without a word: say what failed
        logger.exception("error while streaming a response")
        yield b"data: " + error_body(f"{type(e).__name__}: {e}", "InternalServerError", 500) + b"\n\n"
        yield DONE


def stream_response(events: AsyncIterator[bytes]) -> Response:
    response = Response(_guarded(events), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None  # Quart's default of 60 s would cut long generations
    return response
