"""POST /v1/chat/completions: request and response models (vLLM's field names and defaults)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kvserve.api.openai.protocol_base import (
    MAX_MESSAGES,
    ConversationFields,
    GenerationRequest,
    Int32,
    ResponseModel,
    UsageInfo,
    random_id,
)


class ChatCompletionRequest(GenerationRequest, ConversationFields):
    messages: Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)]
    logprobs: bool | None = False
    top_logprobs: Int32 | None = 0
    max_tokens: Int32 | None = None
    max_completion_tokens: Int32 | None = None
    n: Int32 | None = 1
    tool_choice: str | dict[str, Any] | None = "none"  # when not given: "auto" with tools, else "none"
    parallel_tool_calls: bool | None = True
    include_reasoning: bool = True
    reasoning_effort: str | None = None  # reaches the chat template (and sets enable_thinking unless given)
    echo: bool = False
    add_special_tokens: bool = False  # the chat template writes the special tokens


class FunctionCall(ResponseModel):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(ResponseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-tool-{random_id()}")
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(ResponseModel):
    role: str
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reasoning: str | None = None


class ChatCompletionLogProb(ResponseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ResponseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(ResponseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatCompletionResponseChoice(ResponseModel):
    index: int
    message: ChatMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionResponse(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    system_fingerprint: str | None = None
    usage: UsageInfo
    prompt_logprobs: list[dict[int, dict] | None] | None = None
    prompt_token_ids: list[int] | None = None


class DeltaFunctionCall(ResponseModel):
    name: str | None = None  # in the first delta of a call
    arguments: str | None = None  # the next piece of the JSON text


class DeltaToolCall(ResponseModel):
    index: int  # which call of the message this piece belongs to
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(ResponseModel):
    """Streamed with exclude_unset: a delta shows only the fields set on it."""

    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] = Field(default_factory=list)


class ChatCompletionResponseStreamChoice(ResponseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionStreamResponse(ResponseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None
    prompt_token_ids: list[int] | None = None
