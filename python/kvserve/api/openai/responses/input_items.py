"""A Responses request's input items -> the chat messages the chat template renders.

    message               {"role", "content": str | [input_text | output_text parts]}  -> the same role's message
                          (developer is the system role of chat templates)
    function_call         {"call_id", "name", "arguments"}   -> the tool_calls of the assistant message before it
                                                                (the same turn: its answer and parallel calls)
    function_call_output  {"call_id", "output"}              -> a tool message
    reasoning             {"content" | "summary": [{text}]}  -> the reasoning of the assistant message after it

Items a model's output can hold (messages, function calls, reasoning) come back as input unchanged, so a
response's output continues its conversation (previous_response_id, or a client that sends it back).
"""

from __future__ import annotations

from typing import Any

from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.errors import InvalidRequestError

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_NOT_SERVED_PARTS = ("input_image", "input_file", "input_audio")


def _text(parts: Any, param: str) -> str:
    """The text of a content field: a string, or a list of text parts (joined, as chat joins them)."""
    if isinstance(parts, str):
        return parts
    require(isinstance(parts, list), f"{param} must be a string or a list of content parts.", param)
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _NOT_SERVED_PARTS:
            raise NotImplementedFeature(f"{param}: content parts of type {kind!r} are not supported.", "input")
        require(
            kind in _TEXT_PARTS and isinstance(part.get("text"), str),
            f"{param}: a content part must be {{'type': 'input_text', 'text': ...}}, got {part!r:.100}.",
            "input",
        )
        texts.append(part["text"])
    return "\n".join(texts)


class _Messages:
    """The messages built so far; function calls and reasoning join the assistant turn they belong to."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.reasoning: str | None = None  # from a reasoning item, for the next assistant message

    def assistant(self, message: dict[str, Any]) -> None:
        if self.reasoning is not None:
            message["reasoning"] = self.reasoning
            self.reasoning = None
        self.messages.append(message)

    def add(self, item: Any, param: str) -> None:
        require(isinstance(item, dict), f"{param} must be an object.", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            role = _ROLES.get(role) if isinstance(role, str) else None
            require(
                role is not None,
                f"{param}.role must be one of user, assistant, system, developer; got {item.get('role')!r:.50}.",
                "input",
            )
            content = _text(item.get("content"), f"{param}.content")
            if role == "assistant":
                self.assistant({"role": role, "content": content})
            else:
                self.messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            require(
                all(isinstance(v, str) for v in (call_id, name, arguments)) and bool(name),
                f"{param}: a function_call needs string call_id, name and arguments.",
                "input",
            )
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = self.messages[-1] if self.messages else None
            if last is not None and last["role"] == "assistant" and self.reasoning is None:
                last.setdefault("tool_calls", []).append(call)  # the same turn as the answer before it
            else:
                self.assistant({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            require(isinstance(call_id, str), f"{param}: a function_call_output needs a string call_id.", "input")
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": _text(output, f"{param}.output")})
        elif kind == "reasoning":
            if item.get("encrypted_content"):
                raise NotImplementedFeature("Encrypted reasoning content is not supported.", "input")
            parts = item.get("content") or item.get("summary") or []
            self.reasoning = (self.reasoning or "") + _text(parts, f"{param}.content")
        elif kind == "item_reference":
            raise NotImplementedFeature("input items of type 'item_reference' are not supported.", "input")
        else:
            raise InvalidRequestError(
                f"{param}: unsupported input item type {kind!r:.50}; this server reads message, function_call, "
                "function_call_output and reasoning items.",
                "input",
            )


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    require(bool(value), "input must not be empty.", "input")
    return value


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of a conversation: the instructions as its system message, then the items."""
    messages = _Messages()
    if instructions:
        messages.messages.append({"role": "system", "content": instructions})
    for index, item in enumerate(items):
        messages.add(item, f"input[{index}]")
    if messages.reasoning is not None:  # reasoning with no answer after it: an assistant turn of its own
        messages.assistant({"role": "assistant", "content": ""})
    return messages.messages
