"""Plain HTTP calls to a test server, with headers, for routes the SDKs do not cover."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def call(
    base_url: str,
    method: str,
    path: str,
    body: dict | list | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], bytes]:
    """One request, the path sent exactly as given (no client-side normalisation): status, headers, body."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    all_headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def call_json(base_url: str, method: str, path: str, body: dict | list | None = None, **kwargs) -> tuple[int, object]:
    status, _, raw = call(base_url, method, path, body, **kwargs)
    return status, json.loads(raw) if raw else None
