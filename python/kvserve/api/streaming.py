"""Streamed (SSE) responses: no response timeout, and an error after the start becomes the family's error
event and end marker."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response

from kvserve.api.envelopes import ErrorEnvelope, ErrorReport
from kvserve.api.families import current_envelope
from kvserve.errors import KvserveError


async def _guarded(events: AsyncIterator[bytes], envelope: ErrorEnvelope) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event
    except KvserveError as e:
        yield envelope.stream_error(ErrorReport.of(e))
    except Exception as e:  # never a broken connection without a word: say what failed
        yield envelope.stream_error(ErrorReport.unexpected(e))


def stream_response(events: AsyncIterator[bytes]) -> Response:
    """Must be called while serving the request: the stream's envelope is its family's."""
    response = Response(_guarded(events, current_envelope()), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None  # Quart's default of 60 s would cut long generations
    return response
