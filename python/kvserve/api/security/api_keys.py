"""API keys (--api-key, KVSERVE_API_KEY): asked on every route but an explicit public set.

The decision is made after routing, on the rule the router matched, so it holds for exactly the routes the
router serves: no spelling of a path (dot segments, %2e, doubled or trailing slashes, case, Host) can reach
a protected route as a public one. A request that matches no route is refused too, so a client without the
key learns nothing about which routes exist. CORS preflights are answered before this check (cors.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from quart import Quart, Response, request

from kvserve.api.envelopes import ErrorReport
from kvserve.api.errors import error_response
from kvserve.errors import AuthenticationError

# Route rules anyone may call (probes and scrapers carry no key); /metrics leaves with --protect-metrics.
PUBLIC_RULES = frozenset({"/health", "/ping", "/version", "/metrics"})


def public_rules(protect_metrics: bool) -> frozenset[str]:
    return PUBLIC_RULES - {"/metrics"} if protect_metrics else PUBLIC_RULES


def _digest(key: str) -> bytes:
    # Equal-length digests, so the comparison's time tells nothing about a key's length or prefix.
    return hashlib.sha256(key.encode()).digest()


class ApiKeyCheck:
    def __init__(self, keys: Sequence[str], protect_metrics: bool) -> None:
        self.digests = tuple(_digest(key) for key in keys)
        self.public = public_rules(protect_metrics)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = _digest(presented)
        matched = False
        for expected in self.digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(digest, expected)
        return matched

    @staticmethod
    def presented_key() -> str | None:
        """`Authorization: Bearer KEY` (OpenAI's clients) or `x-api-key: KEY` (Anthropic's)."""
        authorization = request.headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return request.headers.get("x-api-key")

    async def before_request(self) -> Response | None:
        rule = request.url_rule
        if rule is not None and rule.rule in self.public:
            return None
        if self.accepts(self.presented_key()):
            return None
        error = AuthenticationError("Unauthorized: a valid API key is required (Authorization: Bearer KEY).")
        return error_response(ErrorReport.of(error))


def install_api_keys(app: Quart, keys: Sequence[str], protect_metrics: bool) -> None:
    if keys:
        app.before_request(ApiKeyCheck(keys, protect_metrics).before_request)
