"""A chat request's tools and tool_choice -> how its output is constrained and read (vLLM's rules and errors).

none      the model answers in text; tools still reach the chat template
auto      the model may call tools in its own markup, read by --tool-call-parser
required  a grammar makes the answer a JSON array of one or more calls of the given tools
named     a grammar makes the answer the arguments of that function
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvserve.api.frontend.validation import require
from kvserve.api.openai.chat_protocol import ChatCompletionRequest
from kvserve.api.settings import ServerSettings
from kvserve.errors import InvalidRequestError
from kvserve.structured.spec import GrammarSpec
from kvserve.text.message_parser import MessageParser
from kvserve.text.tools.base import ToolParser
from kvserve.text.tools.required_calls import RequiredCallsParser

_NAMED_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class ToolPlan:
    grammar: GrammarSpec | None  # the constraint tool_choice puts on the output
    tools: ToolParser | None  # reads calls out of the answer (auto, required)
    named_function: str | None  # named: the whole answer is this function's arguments
    auto: bool  # calls found in the answer end the choice with finish_reason "tool_calls"
    max_calls: int | None  # parallel_tool_calls false: one call at most

    def message_parser(self, settings: ServerSettings) -> MessageParser | None:
        """How the answer is read; None when it is plain text (the stream's fast path)."""
        reasoning = settings.reasoning_parser
        if reasoning is None and self.tools is None and self.named_function is None:
            return None
        return MessageParser(reasoning, self.tools, self.named_function, self.max_calls)


NO_TOOLS = ToolPlan(None, None, None, False, None)


def function_definitions(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The tools' function definitions by name; each tool must be {"type": "function", "function": {name, ...}}."""
    functions: dict[str, dict[str, Any]] = {}
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        require(
            isinstance(tool, dict) and tool.get("type", "function") == "function" and isinstance(function, dict),
            f"tools[{index}] must be an object with type 'function' and a 'function' definition.",
            "tools",
        )
        name = function.get("name")
        require(
            isinstance(name, str) and bool(name), f"tools[{index}].function.name must be a non-empty string.", "tools"
        )
        parameters = function.get("parameters")
        require(
            parameters is None or isinstance(parameters, dict),
            f"tools[{index}].function.parameters must be a JSON schema object.",
            "tools",
        )
        functions[name] = function
    return functions


def _required_schema(functions: dict[str, dict[str, Any]], max_calls: int | None) -> dict[str, Any]:
    """A JSON array of {"name": <a tool's name>, "parameters": <its arguments>}, at least one (vLLM's shape)."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [name]},
                "parameters": function.get("parameters") or _ANY_OBJECT,
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,  # the grammar must not let the model add keys the parser drops
        }
        for name, function in functions.items()
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    if max_calls is not None:
        schema["maxItems"] = max_calls
    return schema


def tool_plan(body: ChatCompletionRequest, settings: ServerSettings) -> ToolPlan:
    given = "tool_choice" in body.model_fields_set and body.tool_choice is not None
    return plan_tools(body.tools, body.tool_choice if given else None, body.parallel_tool_calls, settings)


def plan_tools(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
    settings: ServerSettings,
) -> ToolPlan:
    """Tools and tool_choice in chat's shape (None: not given); any API family's request converts to it."""
    choice = tool_choice if tool_choice is not None else ("auto" if tools else "none")
    max_calls = None if parallel_tool_calls is not False else 1
    none = NO_TOOLS
    if choice == "none":
        return none
    require(tools is not None, "When using `tool_choice`, `tools` must be set.", "tool_choice")
    functions = function_definitions(tools)
    if isinstance(choice, str):
        require(
            choice in ("auto", "required"),
            f'Invalid value for `tool_choice`: {choice}! Only named tools, "none", "auto" or "required" are supported.',
            "tool_choice",
        )
        if choice == "required":
            if not functions:  # vLLM: required with an empty tools list behaves as none
                return none
            grammar = GrammarSpec.json_schema(_required_schema(functions, max_calls))
            return ToolPlan(grammar, RequiredCallsParser(), None, False, None)
        if settings.tool_parser is None or not settings.enable_auto_tool_choice:
            raise InvalidRequestError(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', "tool_choice"
            )
        return ToolPlan(None, settings.tool_parser, None, True, max_calls) if functions else none
    function = choice.get("function") if isinstance(choice, dict) else None
    require(
        isinstance(function, dict),
        f"Invalid value for `function`: `{function}` in `tool_choice`! {_NAMED_USAGE}",
        "tool_choice",
    )
    require("name" in function, f"Expected field `name` in `function` in `tool_choice`! {_NAMED_USAGE}", "tool_choice")
    name = function["name"]
    require(
        isinstance(name, str) and bool(name),
        f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_NAMED_USAGE}",
        "tool_choice",
    )
    require(
        name in functions,
        "The tool specified in `tool_choice` does not match any of the specified `tools`",
        "tool_choice",
    )
    grammar = GrammarSpec.json_schema(functions[name].get("parameters") or _ANY_OBJECT)
    return ToolPlan(grammar, None, name, False, None)
