"""GET /openapi.json and GET /docs (Swagger UI), unless --disable-docs.

By default the page loads Swagger UI from a CDN, as FastAPI's does. With --enable-offline-docs its assets
come from the `swagger-ui-bundle` package (Apache-2.0, no dependencies, the assets Connexion serves), under
/docs/assets/, so the docs work with no network; without that package the server refuses to start.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from quart import Blueprint, Quart, Response, current_app, send_from_directory

from kvserve.api.docs.openapi import openapi_document
from kvserve.api.responses import json_response
from kvserve.api.settings import ServerSettings
from kvserve.errors import NotFoundError

bp = Blueprint("docs", __name__)

CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
_CONFIG_KEY = "KVSERVE_DOCS"
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>kvserve - Swagger UI</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{url: "{openapi}", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


def offline_assets_dir() -> Path:
    """Swagger UI's assets as the swagger-ui-bundle package ships them (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui_bundle")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "--enable-offline-docs serves Swagger UI from the swagger-ui-bundle package, which is not installed: "
            "pip install 'kvserve[docs]' (or swagger-ui-bundle)"
        )
    vendor = Path(next(iter(spec.submodule_search_locations))) / "vendor"
    found = sorted(vendor.glob("swagger-ui-*/swagger-ui-bundle.js"))
    if not found:
        raise ValueError(f"swagger-ui-bundle is installed but ships no Swagger UI assets under {vendor}")
    return found[-1].parent


def install_docs(app: Quart, settings: ServerSettings) -> None:
    if settings.disable_docs:
        return
    app.config[_CONFIG_KEY] = offline_assets_dir() if settings.enable_offline_docs else None
    app.register_blueprint(bp)


@bp.get("/openapi.json")
async def openapi() -> Response:
    settings = current_app.config["KVSERVE"].settings
    return json_response(openapi_document(current_app, settings.root_path))


@bp.get("/docs")
async def docs() -> Response:
    root = current_app.config["KVSERVE"].settings.root_path
    assets = f"{root}/docs/assets" if current_app.config[_CONFIG_KEY] is not None else CDN
    return Response(PAGE.format(assets=assets, openapi=f"{root}/openapi.json"), content_type="text/html")


@bp.get("/docs/assets/<name>")
async def docs_asset(name: str) -> Response:
    directory: Path | None = current_app.config[_CONFIG_KEY]
    if directory is None or name not in _ASSETS:
        raise NotFoundError(f"No documentation asset {name!r}.")
    return await send_from_directory(directory, name)
