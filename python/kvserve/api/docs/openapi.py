"""The OpenAPI 3.1 document of the app's routes: every rule the router serves, with its request and
response schemas generated from the pydantic models in route_models.py."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from quart import Quart

import kvserve
from kvserve.api.docs.route_models import ROUTE_MODELS, RouteModels

_PATH_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Routes of the docs themselves and methods the framework answers on its own.
_UNDOCUMENTED_METHODS = frozenset({"HEAD", "OPTIONS"})
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"type": "object"}}}}


def _schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(endpoint: str, method: str, models: RouteModels | None) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": f"{endpoint.replace('.', '_')}_{method.lower()}"}
    if models is not None and models.summary:
        operation["summary"] = models.summary
    if models is not None and models.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema_ref(models.request)}},
        }
    elif method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    schema: dict[str, Any] = {}
    if models is not None and models.response is not None:
        schema = _schema_ref(models.response)
        if models.response_is_list:
            schema = {"type": "array", "items": schema}
    operation["responses"] = {
        "200": {"description": "Successful Response", "content": {"application/json": {"schema": schema}}},
        "400": _ERROR,
    }
    return operation


def openapi_document(app: Quart, root_path: str = "") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    used: set[type[BaseModel]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        models = ROUTE_MODELS.get(rule.endpoint)
        if models is not None:
            used.update(m for m in (models.request, models.response) if m is not None)
        path = _PATH_PARAMETER.sub(r"{\1}", rule.rule)
        item = paths.setdefault(path, {})
        for method in sorted(rule.methods - _UNDOCUMENTED_METHODS):
            item[method.lower()] = _operation(rule.endpoint, method, models)
        parameters = _PATH_PARAMETER.findall(rule.rule)
        if parameters:
            item["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in parameters
            ]
    ordered = sorted(used, key=lambda m: m.__name__)
    _, schemas = models_json_schema(
        [(m, "validation" if m.model_config.get("extra") != "forbid" else "serialization") for m in ordered],
        ref_template="#/components/schemas/{model}",
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "kvserve", "version": kvserve.__version__},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas.get("$defs", {})},
    }
    if root_path:
        document["servers"] = [{"url": root_path}]
    return document
