"""kvserve's exception taxonomy. Each error knows its HTTP status; the API layer shapes the envelope."""

from __future__ import annotations

from dataclasses import dataclass


class KvserveError(Exception):
    status_code = 500
    error_type = "InternalServerError"
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(KvserveError):
    """The request cannot be served as asked (HTTP 400)."""

    status_code = 400
    error_type = "BadRequestError"


class NotFoundError(KvserveError):
    status_code = 404
    error_type = "NotFoundError"


class AuthenticationError(KvserveError):
    """No valid API key (HTTP 401)."""

    status_code = 401
    error_type = "AuthenticationError"


class ServiceUnavailableError(KvserveError):
    """The server cannot take the request now: it sleeps, its queue is full or it is shutting down (HTTP 503
    with Retry-After; the request may succeed later, here or on another replica)."""

    status_code = 503
    error_type = "ServiceUnavailableError"
    retry_after = 1


class EngineDeadError(KvserveError):
    """The engine failed and serves nothing more (HTTP 500, /health answers 503)."""

    status_code = 500
    error_type = "EngineDeadError"


class RequestTimeoutError(KvserveError):
    """The request did not finish within its timeout (queueing and generation); it was aborted (HTTP 408)."""

    status_code = 408
    error_type = "RequestTimeoutError"


_BY_TYPE = {
    cls.__name__: cls
    for cls in (
        KvserveError,
        InvalidRequestError,
        NotFoundError,
        AuthenticationError,
        ServiceUnavailableError,
        EngineDeadError,
        RequestTimeoutError,
    )
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as plain data, to cross actor (and later process) boundaries."""

    kind: str
    message: str
    param: str | None = None

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        if isinstance(error, KvserveError):
            return cls(type(error).__name__, error.message, error.param)
        return cls(KvserveError.__name__, f"{type(error).__name__}: {error}")

    def to_exception(self) -> KvserveError:
        return _BY_TYPE.get(self.kind, KvserveError)(self.message, self.param)
