"""An Anthropic Messages request -> the front half's Conversation, in the OpenAI message shapes chat templates
read (as vLLM converts it), and its tools and tool_choice -> a ToolPlan.

user/assistant text blocks          one content string, or text parts when there are several
system (string or text blocks)      one system message first, its texts joined (system messages too)
assistant tool_use                  tool_calls [{id, type: function, function: {name, arguments: JSON}}]
user tool_result                    a "tool" message {tool_call_id, content}
thinking                            the assistant message's "reasoning"; redacted_thinking is dropped
image                               a 400: the models served here read text only
"""

from __future__ import annotations

import json
from typing import Any

from kvserve.api.anthropic.protocol import InputMessage, MessagesInput, MessagesRequest, RequestBlock, ToolChoice
from kvserve.api.frontend.conversation import Conversation
from kvserve.api.frontend.validation import require
from kvserve.api.openai.tool_choice import ToolPlan, plan_tools
from kvserve.api.settings import ServerSettings
from kvserve.errors import InvalidRequestError
from kvserve.structured.spec import GrammarSpec

_TEXT_ONLY = "image content blocks are not supported: the served model reads text only."


def conversation_of(body: MessagesInput) -> Conversation:
    messages: list[dict[str, Any]] = []
    system = _system_text(body)
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        if message.role != "system":
            messages.extend(_converted(message, index))
    return Conversation(messages=messages, tools=openai_tools(body), chat_template_kwargs=_template_kwargs(body))


def _system_text(body: MessagesInput) -> str:
    parts = [body.system] if isinstance(body.system, str) else _texts(body.system or [], "system")
    for index, message in enumerate(body.messages):
        if message.role == "system":
            content = message.content
            parts += [content] if isinstance(content, str) else _texts(content, f"messages.{index}.content")
    return "".join(parts)


def _texts(blocks: list[RequestBlock], param: str) -> list[str]:
    for block in blocks:
        require(block.type == "text", f"{param}: only text blocks are accepted here, got {block.type!r}.", param)
    return [_text(block, param) for block in blocks]


def _text(block: RequestBlock, param: str) -> str:
    require(isinstance(block.text, str), f"{param}: a text block needs `text`.", param)
    return block.text


def _converted(message: InputMessage, index: int) -> list[dict[str, Any]]:
    """One Anthropic message as the OpenAI messages it becomes: tool results first (each its own message), then
    the message itself when anything is left in it."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    param = f"messages.{index}.content"
    texts: list[dict[str, str]] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    converted: list[dict[str, Any]] = []
    for block in message.content:
        kind = block.type
        if kind == "text":
            texts.append({"type": "text", "text": _text(block, param)})
        elif kind == "image":
            raise InvalidRequestError(_TEXT_ONLY, "messages")
        elif kind == "tool_use":
            require(bool(block.id) and bool(block.name), f"{param}: a tool_use block needs `id` and `name`.", param)
            arguments = json.dumps(block.input if block.input is not None else {}, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif kind == "tool_result":
            require(bool(block.tool_use_id), f"{param}: a tool_result block needs `tool_use_id`.", param)
            converted.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block, param)})
        elif kind == "thinking":
            reasoning.append(block.thinking or "")
        elif kind != "redacted_thinking":  # opaque by design: accepted so clients can send a message back whole
            raise InvalidRequestError(f"{param}: unknown content block type {kind!r}.", "messages")
    out: dict[str, Any] = {"role": message.role}
    if texts:
        out["content"] = texts[0]["text"] if len(texts) == 1 else texts
    if calls:
        out["tool_calls"] = calls
    if reasoning:
        out["reasoning"] = "".join(reasoning)
    if texts or calls or reasoning:
        converted.append(out)
    return converted


def _result_text(block: RequestBlock, param: str) -> str:
    content = block.content
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for item in content:
        kind = item.get("type")
        if kind == "image":
            raise InvalidRequestError(_TEXT_ONLY, "messages")
        require(kind == "text" and isinstance(item.get("text"), str), f"{param}: tool_result holds text blocks.", param)
        parts.append(item["text"])
    return "\n".join(parts)


def _template_kwargs(body: MessagesInput) -> dict[str, Any] | None:
    """`thinking` reaches the chat template as enable_thinking (the switch Qwen-style templates read), and
    output_config.effort as reasoning_effort (with thinking on, as chat's reasoning_effort); the request's own
    chat_template_kwargs win."""
    kwargs: dict[str, Any] = {}
    effort = body.output_config.effort if body.output_config is not None else None
    if effort is not None:
        kwargs.update(reasoning_effort=effort, enable_thinking=True)
    if body.thinking is not None:
        kwargs["enable_thinking"] = body.thinking.type != "disabled"
    kwargs.update(body.chat_template_kwargs or {})
    return kwargs or None


def output_constraint(body: MessagesRequest, plan: ToolPlan) -> GrammarSpec | None:
    """tool_choice any/tool, or output_config.format's JSON schema: one constraint at most (as in vLLM)."""
    output_format = body.output_config.format if body.output_config is not None else None
    structured = GrammarSpec.json_schema(output_format.json_schema) if output_format is not None else None
    require(
        plan.grammar is None or structured is None,
        "You can only use one kind of structured outputs constraint but multiple are specified: "
        "['tool_choice', 'output_config.format']",
        "tool_choice",
    )
    return plan.grammar or structured


def openai_tools(body: MessagesInput) -> list[dict[str, Any]] | None:
    if body.tools is None:
        return None
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
        }
        for tool in body.tools
    ]


def _openai_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.type == "tool":
        require(bool(choice.name), "tool_choice of type 'tool' needs the tool's `name`.", "tool_choice")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def tool_plan(body: MessagesInput, settings: ServerSettings) -> ToolPlan:
    """auto -> auto (needs --enable-auto-tool-choice and a parser), any -> required, tool -> named, none."""
    choice = body.tool_choice
    if choice is None:
        return plan_tools(openai_tools(body), None, None, settings)
    parallel = False if choice.disable_parallel_tool_use else None
    return plan_tools(openai_tools(body), _openai_choice(choice), parallel, settings)
