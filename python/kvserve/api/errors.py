"""Errors as HTTP responses in the OpenAI envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

import orjson
import pydantic
from quart import Response

from kvserve.errors import InvalidRequestError, KvserveError

logger = logging.getLogger(__name__)


def error_body(message: str, error_type: str, status: int, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": status}})


def error_response(error: KvserveError) -> Response:
    body = error_body(error.message, error.error_type, error.status_code, error.param)
    return Response(body, status=error.status_code, content_type="application/json")


def validation_error(error: pydantic.ValidationError) -> InvalidRequestError:
    """pydantic's first complaint, phrased for a client: which field, what is wrong."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"]
    if location:
        message = f"{location}: {message}"
    return InvalidRequestError(message, location.split(".")[0] if location else None)


def internal_error(error: BaseException) -> Response:
    logger.exception("unhandled error while serving a request", exc_info=error)
    return error_response(KvserveError(f"Internal server error: {type(error).__name__}: {error}"))
