"""POST /v1/messages and /v1/messages/count_tokens: request and response models (Anthropic's field names).

Requests accept the content blocks a client may send back in a conversation (text, image, tool_use,
tool_result, thinking, redacted_thinking) as one loose block model: which fields a block needs is checked
where it is converted (conversion.py), with a 400 that names the block.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from kvserve.api.openai.protocol_base import (
    MAX_LIST_LEN,
    MAX_MESSAGES,
    Float,
    Int32,
    RequestModel,
    ResponseModel,
    random_id,
)


class RequestBlock(RequestModel):
    type: str
    text: str | None = None  # text
    source: dict[str, Any] | None = None  # image
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: Any = None  # tool_use: the call's arguments
    tool_use_id: str | None = None  # tool_result
    content: str | list[dict[str, Any]] | None = None  # tool_result
    is_error: bool | None = None  # tool_result
    thinking: str | None = None  # thinking
    signature: str | None = None  # thinking
    data: str | None = None  # redacted_thinking


# Roles some Claude Code versions send outside Anthropic's spec, read as vLLM reads them.
_ROLE_ALIASES = {"ctx": "user", "msg": "user"}


class InputMessage(RequestModel):
    # vLLM also takes system messages inside `messages` (joined to the top-level system prompt).
    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[RequestBlock], Field(max_length=MAX_LIST_LEN)]

    @field_validator("role", mode="before")
    @classmethod
    def _alias(cls, role: Any) -> Any:
        return _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role


class Tool(RequestModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("input_schema")
    @classmethod
    def _object_by_default(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return schema if "type" in schema else {**schema, "type": "object"}


class ToolChoice(RequestModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # type "tool"
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(RequestModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Int32 | None = None  # accepted; the reasoning parser splits what the model thinks


class OutputFormat(RequestModel):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(RequestModel):
    """vLLM's output_config: a JSON schema for the answer, and an effort the chat template reads."""

    format: OutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class MessagesInput(RequestModel):
    """What both routes render: the conversation, its system prompt and tools."""

    model: str
    messages: Annotated[list[InputMessage], Field(max_length=MAX_MESSAGES)]
    system: str | Annotated[list[RequestBlock], Field(max_length=MAX_LIST_LEN)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_LIST_LEN)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None  # its effort changes the prompt, so count_tokens reads it too
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's extra


class MessagesRequest(MessagesInput):
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)]
    stop_sequences: Annotated[list[str], Field(max_length=MAX_LIST_LEN)] | None = None
    stream: bool | None = False
    temperature: Float | None = None
    top_p: Float | None = None
    top_k: Int32 | None = None
    metadata: dict[str, Any] | None = None  # {"user_id"}: accepted, not used


class CountTokensRequest(MessagesInput):
    pass


class TextBlock(ResponseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(ResponseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str  # opaque to clients; ours is random (nothing verifies it when it comes back)


class ToolUseBlock(ResponseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: Any


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class Usage(ResponseModel):
    input_tokens: int
    output_tokens: int


class Message(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: Usage


class CountTokensResponse(ResponseModel):
    input_tokens: int


def message_id() -> str:
    return f"msg_{random_id()}"


def tool_use_id() -> str:
    return f"toolu_{random_id()}"
