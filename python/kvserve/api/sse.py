"""Server-sent events: `data: <json>\\n\\n` per chunk, `data: [DONE]\\n\\n` at the end."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"


def named_sse_event(event: str, payload: Any) -> bytes:
    """`event: <name>\\ndata: <json>\\n\\n`, the framing of Anthropic's (and the Responses API's) streams."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
