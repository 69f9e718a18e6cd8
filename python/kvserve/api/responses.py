"""JSON response bodies, written with orjson (token-id keys, as in prompt_logprobs, are allowed)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from quart import Response


def json_response(payload: BaseModel | dict[str, Any] | list[Any], status: int = 200) -> Response:
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    return Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status, content_type="application/json")
