"""A Responses request's tools and tool_choice -> chat's shape, so chat's tool plan (tool_choice.py) serves both.

Responses writes a function tool flat ({"type": "function", "name", "description", "parameters", "strict"}) and
a named choice as {"type": "function", "name"}; chat nests both under "function". Only function tools are
served: OpenAI's hosted tools (web search, file search, code interpreter, MCP, ...) are a 501 naming the type.
"""

from __future__ import annotations

from typing import Any

from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.openai.tool_choice import NO_TOOLS, ToolPlan, function_definitions, plan_tools
from kvserve.api.settings import ServerSettings
from kvserve.errors import InvalidRequestError, KvserveError

# OpenAI's tool types that this server does not run (they need OpenAI's hosted services or a client loop).
HOSTED_TOOL_TYPES = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "web_search_2025_08_26",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer",
        "image_generation",
        "local_shell",
        "shell",
        "mcp",
        "custom",
        "apply_patch",
        "tool_search",
    }
)
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def _unserved(kind: Any, param: str) -> KvserveError:
    if isinstance(kind, str) and kind in HOSTED_TOOL_TYPES:
        return NotImplementedFeature(
            f"Tool type {kind!r} is not supported by this server; only function tools are.", param
        )
    return InvalidRequestError(f"Unknown tool type {kind!r:.50}; this server supports 'function' tools.", param)


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for index, tool in enumerate(tools):
        require(isinstance(tool, dict), f"tools[{index}] must be an object.", "tools")
        if tool.get("type") != "function":
            raise _unserved(tool.get("type"), "tools")
        converted.append({"type": "function", "function": {k: tool[k] for k in _FUNCTION_KEYS if k in tool}})
    return converted


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "allowed_tools":
        raise NotImplementedFeature("tool_choice of type 'allowed_tools' is not supported.", "tool_choice")
    raise _unserved(kind, "tool_choice")


def responses_tool_plan(
    tools: list[dict[str, Any]], choice: str | dict[str, Any], parallel: bool | None, settings: ServerSettings
) -> tuple[ToolPlan, list[dict[str, Any]] | None]:
    """How the output is constrained and read, and the tools the chat template sees (none with tool_choice
    "none", as vLLM renders it). As in vLLM's Responses (unlike its chat), "auto" on a server without
    --enable-auto-tool-choice is no error: the tools reach the template and the answer stays text."""
    converted = chat_tools(tools)
    chat_choice = chat_tool_choice(choice)
    template_tools = (converted or None) if chat_choice != "none" else None
    if chat_choice == "auto" and not (settings.enable_auto_tool_choice and settings.tool_parser is not None):
        function_definitions(converted)
        return NO_TOOLS, template_tools
    plan = plan_tools(converted or None, chat_choice if converted or choice != "auto" else None, parallel, settings)
    return plan, template_tools
