"""text.format -> the output constraint (structured outputs), and the constraint of the whole request.

{"type": "text"}                                              no constraint
{"type": "json_object"}                                       any JSON object
{"type": "json_schema", "name", "schema", "strict", ...}      JSON valid against the schema
"""

from __future__ import annotations

from typing import Any

from kvserve.api.frontend.validation import require
from kvserve.api.openai.responses.protocol import ResponsesRequest
from kvserve.api.openai.structured_fields import grammar_spec, schema_spec
from kvserve.api.openai.tool_choice import ToolPlan
from kvserve.structured.spec import GrammarSpec

DEFAULT_TEXT = {"format": {"type": "text"}}


def text_format_spec(text: dict[str, Any] | None) -> GrammarSpec | None:
    text_format = (text or {}).get("format")
    if text_format is None:
        return None
    require(isinstance(text_format, dict), "text.format must be an object.", "text")
    kind = text_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_object")
    require(
        kind == "json_schema",
        f"text.format.type must be one of text, json_object, json_schema; got {kind!r:.50}.",
        "text",
    )
    require("schema" in text_format, "text.format of type 'json_schema' needs a schema.", "text")
    return schema_spec(text_format["schema"], "text", False)


def output_constraint(body: ResponsesRequest, plan: ToolPlan) -> GrammarSpec | None:
    """At most one of text.format, vLLM's structured_outputs (or guided_*) and a tool choice that forces calls."""
    specs = {
        name: spec
        for name, spec in (
            ("text", text_format_spec(body.text)),
            ("structured_outputs", grammar_spec(body)),
            ("tool_choice", plan.grammar),
        )
        if spec is not None
    }
    require(
        len(specs) <= 1,
        f"You can only use one kind of structured outputs constraint but multiple are specified: {list(specs)}",
        list(specs)[-1] if specs else "text",
    )
    return next(iter(specs.values()), None)
