"""response_format, structured_outputs and the older guided_* fields -> one GrammarSpec (vLLM's rules).

All of them name the same thing, so a request may set one constraint in all: two are a 400, as in vLLM.
Whether the constraint compiles is the engine's check (kvserve.structured.compiler), before admission.
"""

from __future__ import annotations

import json
from typing import Any

from kvserve.api.frontend.validation import require
from kvserve.api.openai.protocol_base import GenerationRequest, ResponseFormat
from kvserve.errors import InvalidRequestError
from kvserve.structured.spec import GrammarSpec

_RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


def schema_spec(schema: Any, param: str, disable_any_whitespace: bool) -> GrammarSpec:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{param} is not valid JSON: {e}", param) from None
    require(isinstance(schema, (dict, bool)), f"{param} must be a JSON schema (an object).", param)
    return GrammarSpec.json_schema(schema, disable_any_whitespace)


def _choice_spec(choices: list[str], param: str) -> GrammarSpec:
    require(bool(choices), f"{param} must not be empty.", param)
    return GrammarSpec.choices(choices)


def _response_format_spec(response_format: ResponseFormat) -> GrammarSpec | None:
    kind = response_format.type
    require(
        kind in _RESPONSE_FORMAT_TYPES,
        f"response_format type must be one of {', '.join(_RESPONSE_FORMAT_TYPES)}, got {kind!r}.",
        "response_format",
    )
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_object")
    json_schema = response_format.json_schema
    require(
        json_schema is not None and ("schema" in json_schema or "json_schema" in json_schema),
        "response_format of type 'json_schema' needs json_schema.schema.",
        "response_format",
    )
    schema = json_schema.get("schema", json_schema.get("json_schema"))
    return schema_spec(schema, "response_format", False)


def _spec(kind: str, value: Any, param: str, disable_any_whitespace: bool) -> GrammarSpec:
    """One constraint of structured_outputs or guided_*: kind is its field's name (json, regex, ...)."""
    if kind == "json":
        return schema_spec(value, param, disable_any_whitespace)
    if kind == "choice":
        return _choice_spec(value, param)
    if kind == "json_object":
        return GrammarSpec("json_object", disable_any_whitespace=disable_any_whitespace)
    return GrammarSpec(kind, value)


def grammar_spec(body: GenerationRequest) -> GrammarSpec | None:
    """The request's output constraint, or None."""
    specs: dict[str, GrammarSpec] = {}
    if body.response_format is not None and (spec := _response_format_spec(body.response_format)) is not None:
        specs["response_format"] = spec
    structured = body.structured_outputs
    if structured is not None:
        given = {
            "json": structured.json_,
            "regex": structured.regex,
            "choice": structured.choice,
            "grammar": structured.grammar,
            "json_object": structured.json_object or None,
        }
        kinds = [kind for kind, value in given.items() if value is not None]
        if len(kinds) != 1:
            raise InvalidRequestError(
                f"You can only use one kind of structured outputs constraint but "
                f"{'multiple are' if kinds else 'none are'} specified: {kinds}",
                "structured_outputs",
            )
        kind = kinds[0]
        specs["structured_outputs"] = _spec(kind, given[kind], "structured_outputs", structured.disable_any_whitespace)
    for kind in ("json", "regex", "choice", "grammar"):
        if (value := getattr(body, f"guided_{kind}")) is not None:
            specs[f"guided_{kind}"] = _spec(kind, value, f"guided_{kind}", False)
    if len(specs) > 1:
        raise InvalidRequestError(
            f"You can only use one kind of structured outputs constraint but multiple are specified: {list(specs)}",
            list(specs)[1],
        )
    return next(iter(specs.values()), None)
