"""GET /openapi.json (every route, with schemas from the pydantic models), GET /docs (Swagger UI from a CDN,
or with --enable-offline-docs from the swagger-ui-bundle package), --disable-docs."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import orjson

from kvserve.api.app import create_app
from kvserve.api.settings import ServerSettings
from tests.api.conftest import OPS_API_KEYS
from tests.api.http_calls import call, call_json


def app_get(settings: ServerSettings, *paths: str) -> list[tuple[int, bytes, list[str]]]:
    app = create_app(None, settings)  # the docs read no engine
    rules = [rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]

    async def run():
        client = app.test_client()
        responses = []
        for path in paths:
            response = await client.get(path)
            responses.append((response.status_code, await response.get_data(), rules))
        return responses

    return asyncio.run(run())


def settings(**options) -> ServerSettings:
    return ServerSettings(served_model_names=("m",), model_root="m", chat_template=None, **options)


def test_openapi_lists_every_route_with_its_models():
    ((status, body, rules),) = app_get(settings(enable_dev_endpoints=True), "/openapi.json")
    assert status == 200
    document = orjson.loads(body)
    assert document["openapi"].startswith("3.")
    documented = set(document["paths"])
    assert documented == {re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule) for rule in rules}
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    schemas = document["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletionResponse", "CompletionRequest", "GenerativeScoringRequest"} <= set(
        schemas
    )
    assert "messages" in schemas["ChatCompletionRequest"]["properties"]
    assert "label_token_ids" in schemas["GenerativeScoringRequest"]["required"]
    render = document["paths"]["/v1/completions/render"]["post"]["responses"]["200"]
    assert render["content"]["application/json"]["schema"]["type"] == "array"
    assert document["paths"]["/v1/models/{model_id}"]["parameters"][0]["name"] == "model_id"


def test_docs_page_uses_a_cdn_by_default_and_can_be_disabled():
    ((status, page, _),) = app_get(settings(), "/docs")
    assert status == 200 and b"https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js" in page
    assert b'url: "/openapi.json"' in page
    assert [status for status, _, _ in app_get(settings(disable_docs=True), "/docs", "/openapi.json")] == [404, 404]


def test_offline_docs_serve_the_packaged_assets(ops_server):
    auth = {"x-api-key": OPS_API_KEYS[0]}
    status, _, page = call(ops_server.base_url, "GET", "/docs", headers=auth)
    assert status == 200
    assert b"/api/docs/assets/swagger-ui-bundle.js" in page and b"cdn" not in page  # under the root path
    status, _, script = call(ops_server.base_url, "GET", "/api/docs/assets/swagger-ui-bundle.js", headers=auth)
    package = Path(next(iter(importlib.util.find_spec("swagger_ui_bundle").submodule_search_locations)))
    (packaged,) = package.glob("vendor/swagger-ui-*/swagger-ui-bundle.js")
    assert status == 200 and script == packaged.read_bytes()
    assert call(ops_server.base_url, "GET", "/docs/assets/index.html", headers=auth)[0] == 404
    status, document = call_json(ops_server.base_url, "GET", "/openapi.json", headers=auth)
    assert status == 200 and document["servers"] == [{"url": "/api"}]
    assert "/sleep" in document["paths"] and "/collective_rpc" in document["paths"]


def test_offline_docs_without_the_package_fail_clearly(monkeypatch):
    from kvserve.api.docs import routes

    monkeypatch.setattr(routes.importlib.util, "find_spec", lambda name: None)
    try:
        routes.offline_assets_dir()
    except ValueError as e:
        assert "swagger-ui-bundle" in str(e)
    else:
        raise AssertionError("offline docs without swagger-ui-bundle must fail")
