"""Errors as HTTP responses, in the envelope of the family that serves the request."""

from __future__ import annotations

import pydantic
from quart import Response

from kvserve.api.envelopes import ErrorReport
from kvserve.api.families import current_envelope
from kvserve.errors import InvalidRequestError


def error_response(report: ErrorReport) -> Response:
    response = Response(current_envelope().body(report), status=report.status, content_type="application/json")
    if report.retry_after is not None:
        response.headers["Retry-After"] = str(report.retry_after)
    return response


def validation_error(error: pydantic.ValidationError) -> InvalidRequestError:
    """pydantic's first complaint, phrased for a client: which field, what is wrong."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"]
    if location:
        message = f"{location}: {message}"
    return InvalidRequestError(message, location.split(".")[0] if location else None)
