"""Error envelopes: how each API family writes an error, as an HTTP body and as an event inside a stream.

OpenAI    {"error": {"message", "type", "param", "code"}}      in a stream: data: <body>, then data: [DONE]
Anthropic {"type": "error", "error": {"type", "message"}}      in a stream: event: error (the stream ends there)
Cohere    {"message"}                                          in a stream: message-end with delta.error
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import orjson
from werkzeug.exceptions import HTTPException

from kvserve.api.sse import DONE
from kvserve.errors import KvserveError

logger = logging.getLogger(__name__)

# kvserve's names for the HTTP errors raised before a route runs (unknown route, method, oversized body).
_HTTP_ERROR_TYPES = {
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    431: "RequestHeaderFieldsTooLarge",
}


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """An error as every envelope needs it: the message, HTTP status, kvserve's type name and the field."""

    message: str
    status: int
    error_type: str
    param: str | None = None
    retry_after: int | None = None  # seconds; sent as the Retry-After header of an HTTP error

    @classmethod
    def of(cls, error: KvserveError) -> ErrorReport:
        return cls(error.message, error.status_code, error.error_type, error.param, error.retry_after)

    @classmethod
    def of_http(cls, error: HTTPException) -> ErrorReport:
        status = error.code or 500
        return cls(error.description or error.name, status, _HTTP_ERROR_TYPES.get(status, "BadRequestError"))

    @classmethod
    def unexpected(cls, error: BaseException) -> ErrorReport:
        """A bug or a failure with no status of its own: logged with its traceback, answered as a 500."""
        logger.exception("unhandled error while serving a request", exc_info=error)
        return cls.of(KvserveError(f"Internal server error: {type(error).__name__}: {error}"))


class ErrorEnvelope(Protocol):
    def body(self, report: ErrorReport) -> bytes:
        """The JSON body of an HTTP error response."""
        ...

    def stream_error(self, report: ErrorReport) -> bytes:
        """The SSE bytes that end a stream which has already started: the error event and the end marker."""
        ...


class OpenAIEnvelope:
    def body(self, report: ErrorReport) -> bytes:
        error = {"message": report.message, "type": report.error_type, "param": report.param, "code": report.status}
        return orjson.dumps({"error": error})

    def stream_error(self, report: ErrorReport) -> bytes:
        return b"data: " + self.body(report) + b"\n\n" + DONE


# Anthropic names its error types by status; a status it does not list takes its class's general type.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",  # a request past its deadline (--request-timeout)
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


class AnthropicEnvelope:
    def body(self, report: ErrorReport) -> bytes:
        return orjson.dumps(
            {"type": "error", "error": {"type": anthropic_error_type(report.status), "message": report.message}}
        )

    def stream_error(self, report: ErrorReport) -> bytes:
        # Anthropic's streams have no terminator after an error event: the event is the end.
        return b"event: error\ndata: " + self.body(report) + b"\n\n"


class CohereEnvelope:
    def body(self, report: ErrorReport) -> bytes:
        return orjson.dumps({"message": report.message})

    def stream_error(self, report: ErrorReport) -> bytes:
        # Cohere's v2 stream ends with message-end, whose delta carries an error when generation failed.
        event = {"type": "message-end", "delta": {"error": report.message, "finish_reason": "ERROR"}}
        return b"event: message-end\ndata: " + orjson.dumps(event) + b"\n\n"


OPENAI = OpenAIEnvelope()
ANTHROPIC = AnthropicEnvelope()
COHERE = CohereEnvelope()
