"""CORS (--allowed-origins, --allowed-methods, --allowed-headers, --allow-credentials), with the same
defaults and answers as vLLM's server: any origin, method and header; credentials not allowed.

Preflights (OPTIONS with Origin and Access-Control-Request-Method) are answered here, before the API-key
check, since browsers never send credentials with them.
"""

from __future__ import annotations

from quart import Quart, Response, request

from kvserve.api.settings import ServerSettings

ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
PREFLIGHT_MAX_AGE = "600"


class Cors:
    def __init__(self, settings: ServerSettings) -> None:
        self.any_origin = "*" in settings.allowed_origins
        self.origins = frozenset(settings.allowed_origins)
        self.any_method = "*" in settings.allowed_methods
        self.methods = ALL_METHODS if self.any_method else tuple(m.upper() for m in settings.allowed_methods)
        self.any_header = "*" in settings.allowed_headers
        self.headers = frozenset(h.lower() for h in settings.allowed_headers)
        self.credentials = settings.allow_credentials

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def allow_origin_headers(self, origin: str) -> dict[str, str]:
        headers = {}
        if self.any_origin and not self.credentials:
            headers["Access-Control-Allow-Origin"] = "*"
        else:  # a specific origin (or any, with credentials, which "*" does not allow): echo it
            headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    async def preflight(self) -> Response | None:
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or origin is None or method is None:
            return None
        asked_headers = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
        asked_headers = [h for h in asked_headers if h]
        refused = []
        if not self.origin_allowed(origin):
            refused.append("origin")
        if method.upper() not in self.methods:
            refused.append("method")
        if not self.any_header and any(h.lower() not in self.headers for h in asked_headers):
            refused.append("headers")
        if refused:
            return Response(f"Disallowed CORS {', '.join(refused)}", status=400, content_type="text/plain")
        headers = self.allow_origin_headers(origin)
        headers["Access-Control-Allow-Methods"] = ", ".join(self.methods)
        headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        allowed_headers = ", ".join(asked_headers) if self.any_header else ", ".join(sorted(self.headers))
        if allowed_headers:
            headers["Access-Control-Allow-Headers"] = allowed_headers
        return Response("OK", status=200, headers=headers, content_type="text/plain")

    async def after_request(self, response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and self.origin_allowed(origin) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers.update(self.allow_origin_headers(origin))
        return response


def install_cors(app: Quart, settings: ServerSettings) -> None:
    cors = Cors(settings)
    app.before_request(cors.preflight)
    app.after_request(cors.after_request)
