"""API keys, CORS, request ids, root path and /load.

The key test walks every rule the app's router serves (so routes added later are covered without edits):
without a key, or with a wrong one, every route outside the public set answers 401 in OpenAI's envelope;
with a key (Bearer or x-api-key) none does. Path spellings are tried against a real server, since the
ASGI server's decoding is part of what must not open a bypass.
"""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from kvserve.api.app import create_app
from kvserve.api.security.api_keys import PUBLIC_RULES
from kvserve.api.settings import ServerSettings
from kvserve.cli import build_parser, resolve_api_keys
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from tests.api.conftest import OPS_API_KEYS, OPS_ORIGIN
from tests.api.http_calls import call, call_json
from tests.engine_helpers import MiB

KEYS = ("key-one", "key-two")
UNAUTHORIZED = {
    "error": {
        "message": "Unauthorized: a valid API key is required (Authorization: Bearer KEY).",
        "type": "AuthenticationError",
        "param": None,
        "code": 401,
    }
}


def concrete(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "x", rule)


def walk_routes(model_dir, protect_metrics: bool) -> list[tuple[str, str, str, int]]:
    """(method, path, credentials, status) for every route and method, with each kind of credentials."""

    async def main():
        engine = await AsyncEngine.start(EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB))
        settings = ServerSettings(
            served_model_names=("m",),
            model_root="m",
            chat_template=None,
            api_keys=KEYS,
            protect_metrics=protect_metrics,
            enable_dev_endpoints=True,
            enable_server_load_tracking=True,
        )
        app = create_app(engine, settings)
        client = app.test_client()
        credentials = {
            "none": {},
            "wrong bearer": {"Authorization": "Bearer nope"},
            "wrong x-api-key": {"x-api-key": "key-one-and-more"},
            "basic": {"Authorization": "Basic key-one"},
            "bearer": {"Authorization": "Bearer key-two"},
            "x-api-key": {"x-api-key": "key-one"},
        }
        seen = []
        try:
            for rule in app.url_map.iter_rules():
                for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
                    for name, headers in credentials.items():
                        body = {} if method == "POST" else None
                        response = await client.open(concrete(rule.rule), method=method, headers=headers, json=body)
                        seen.append((method, rule.rule, name, response.status_code, await response.get_data()))
        finally:
            await engine.shutdown()
        return seen

    return asyncio.run(main())


@pytest.mark.parametrize("protect_metrics", [False, True])
def test_every_route_but_the_public_ones_needs_a_key(tiny_model_dir, protect_metrics):
    results = walk_routes(tiny_model_dir("llama"), protect_metrics)
    rules = {rule for _, rule, _, _, _ in results}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/messages", "/sleep", "/collective_rpc", "/metrics"} <= rules
    public = PUBLIC_RULES - ({"/metrics"} if protect_metrics else set())
    for method, rule, credentials, status, body in results:
        if rule in public or credentials in ("bearer", "x-api-key"):
            assert status != 401, (method, rule, credentials)
        else:
            assert status == 401, (method, rule, credentials, status)
            if rule.startswith("/v1/messages"):  # Anthropic's family answers in its own envelope
                message = UNAUTHORIZED["error"]["message"]
                assert orjson.loads(body) == {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": message},
                }
            else:
                assert orjson.loads(body) == UNAUTHORIZED


# Spellings of protected paths; none may answer without the key.
TRICKY_PATHS = [
    "/v1/models",
    "/api/v1/models",  # the root path
    "/v1/models/",
    "//v1/models",
    "/v1//models",
    "/V1/MODELS",
    "/./v1/models",
    "/health/../v1/models",
    "/api/../v1/models",
    "/%2e%2e/v1/models",
    "/health/%2e%2e/v1/models",
    "/health%2f..%2fv1/models",
    "/v1/models%00",
    "/v1/models?/health",
    "/v1/models#/health",
    "/metrics/../v1/models",
    "/does-not-exist",
]


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_no_path_spelling_bypasses_the_key(ops_server, path):
    status, _, body = call(ops_server.base_url, "GET", path)
    assert status == 401, (path, status, body)
    status, _, _ = call(ops_server.base_url, "GET", path, headers={"Host": "localhost/health"})
    assert status in (400, 401), path


def test_public_routes_and_both_key_headers(ops_server):
    for path in ("/health", "/ping", "/version", "/metrics", "/api/health"):
        assert call(ops_server.base_url, "GET", path)[0] == 200, path
    for headers in ({"Authorization": f"Bearer {OPS_API_KEYS[1]}"}, {"x-api-key": OPS_API_KEYS[0]}):
        for path in ("/v1/models", "/api/v1/models"):  # with and without the root path
            status, body = call_json(ops_server.base_url, "GET", path, headers=headers)
            assert status == 200 and body["data"][0]["id"] == "tiny-ops"


def test_cors_preflight_needs_no_key(ops_server):
    preflight = {"Origin": OPS_ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization, content-type"
    status, headers, _ = call(ops_server.base_url, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == OPS_ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    other = {**preflight, "Origin": "https://elsewhere.example"}
    assert call(ops_server.base_url, "OPTIONS", "/v1/chat/completions", headers=other)[0] == 400
    # Actual requests carry the CORS headers, refused ones (401) included, and the request id.
    status, headers, _ = call(ops_server.base_url, "GET", "/v1/models", headers={"Origin": OPS_ORIGIN})
    assert status == 401 and headers["access-control-allow-origin"] == OPS_ORIGIN
    status, headers, _ = call(ops_server.base_url, "GET", "/v1/models", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in headers


def test_request_id_headers(ops_server):
    auth = {"x-api-key": OPS_API_KEYS[0]}
    _, headers, _ = call(ops_server.base_url, "GET", "/v1/models", headers={**auth, "X-Request-Id": "abc-123"})
    assert headers["x-request-id"] == "abc-123"
    _, headers, _ = call(ops_server.base_url, "GET", "/v1/models", headers=auth)
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])


def test_load_counts_requests_in_flight(ops_server, ops_client):
    auth = {"x-api-key": OPS_API_KEYS[0]}
    assert call_json(ops_server.base_url, "GET", "/load", headers=auth) == (200, {"server_load": 0})
    stream = ops_client.completions.create(
        model="tiny-ops", prompt=[5, 6, 7], max_tokens=200, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))  # the stream is open: its request is in flight until the last byte
    assert call_json(ops_server.base_url, "GET", "/load", headers=auth) == (200, {"server_load": 1})
    for _ in stream:
        pass
    assert call_json(ops_server.base_url, "GET", "/load", headers=auth) == (200, {"server_load": 0})


def test_api_keys_come_from_flags_or_the_environment():
    parse = build_parser().parse_args
    assert resolve_api_keys(parse(["serve", "--api-key", "a", "--api-key", "b"]), {"KVSERVE_API_KEY": "e"}) == (
        "a",
        "b",
    )
    assert resolve_api_keys(parse(["serve"]), {"KVSERVE_API_KEY": "e"}) == ("e",)
    assert resolve_api_keys(parse(["serve"]), {}) == ()
