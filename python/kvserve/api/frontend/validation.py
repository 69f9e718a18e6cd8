"""The request checks' shared vocabulary: a failed check is a 400 naming the field, an unimplemented one a 501."""

from __future__ import annotations

from kvserve.errors import InvalidRequestError, KvserveError


class NotImplementedFeature(KvserveError):
    status_code = 501
    error_type = "NotImplementedError"


def require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise InvalidRequestError(message, param)
