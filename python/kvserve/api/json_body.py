"""Reading a JSON request body into a pydantic model, with 400s (never 422 or 500) for bad input."""

from __future__ import annotations

from typing import TypeVar

import orjson
import pydantic
from quart import request

from kvserve.api.errors import validation_error
from kvserve.errors import InvalidRequestError

M = TypeVar("M", bound=pydantic.BaseModel)


async def parse_json_body(model: type[M]) -> M:
    content_type = request.mimetype or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidRequestError(
            f"Unsupported Content-Type {content_type or '(none)'!r}: the request body must be JSON "
            "(Content-Type: application/json)."
        )
    data = json_object(await request.get_data(cache=False))
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error(e) from None


def json_object(raw: bytes) -> dict:
    """A request body that must be one JSON object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return data
