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


def _schema_spec(schema: Any, param: str, disable_any_whitespace: bool) -> GrammarSpec:
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
    return _schema_spec(schema, "response_format", False)


def grammar_spec(body: GenerationRequest) -> GrammarSpec | None:
    """The request's output constraint, or None."""
    specs: dict[str, GrammarSpec] = {}
    if body.response_format is not None and (spec := _response_format_spec(body.response_format)) is not None:
        specs["response_format"] = spec
    structured = body.structured_outputs
    if structured is not None:
        whitespace = structured.disable_any_whitespace
        given = {
            "json": structured.json_ is not None,
            "regex": structured.regex is not None,
            "choice": structured.choice is not None,
            "grammar": structured.grammar is not None,
            "json_object": bool(structured.json_object),
        }
        if sum(given.values()) != 1:
            which = "multiple are" if sum(given.values()) > 1 else "none are"
            raise InvalidRequestError(
                f"You can only use one kind of structured outputs constraint but {which} specified: "
                f"{[name for name, set_ in given.items() if set_]}",
                "structured_outputs",
            )
        if structured.json_ is not None:
            specs["structured_outputs"] = _schema_spec(structured.json_, "structured_outputs", whitespace)
        elif structured.regex is not None:
            specs["structured_outputs"] = GrammarSpec("regex", structured.regex)
        elif structured.choice is not None:
            specs["structured_outputs"] = _choice_spec(structured.choice, "structured_outputs")
        elif structured.grammar is not None:
            specs["structured_outputs"] = GrammarSpec("grammar", structured.grammar)
        else:
            specs["structured_outputs"] = GrammarSpec("json_object", disable_any_whitespace=whitespace)
    if body.guided_json is not None:
        specs["guided_json"] = _schema_spec(body.guided_json, "guided_json", False)
    if body.guided_regex is not None:
        specs["guided_regex"] = GrammarSpec("regex", body.guided_regex)
    if body.guided_choice is not None:
        specs["guided_choice"] = _choice_spec(body.guided_choice, "guided_choice")
    if body.guided_grammar is not None:
        specs["guided_grammar"] = GrammarSpec("grammar", body.guided_grammar)
    if len(specs) > 1:
        raise InvalidRequestError(
            f"You can only use one kind of structured outputs constraint but multiple are specified: {list(specs)}",
            list(specs)[1],
        )
    return next(iter(specs.values()), None)
