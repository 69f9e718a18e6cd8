"""POST /v1/responses: the request and the response object (OpenAI's field names, vLLM's extras).

The request's tools, tool_choice, text, reasoning and metadata are kept as sent: the response echoes them, and
the modules that act on them (tools.py, text_format.py) check them with messages that name the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from kvserve.api.openai.protocol_base import (
    MAX_ID_LEN,
    MAX_LIST_LEN,
    MAX_MESSAGES,
    GenerationRequest,
    Int32,
    ResponseModel,
)

# OpenAI's limits on metadata: 16 pairs, keys of 64 characters, values of 512.
MetadataMap = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
]
ResponseStatus = Literal["completed", "incomplete", "in_progress", "queued", "cancelled", "failed"]


class ResponsesRequest(GenerationRequest):
    """The Responses API's fields, plus the sampling and engine extras that chat accepts (top_k, min_p,
    repetition_penalty, stop, seed, priority, cache_salt, request_timeout, ...)."""

    input: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    text: dict[str, Any] | None = None  # {"format": {"type": "text" | "json_object" | "json_schema", ...}}
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_LIST_LEN)] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool | None = True
    max_tool_calls: Int32 | None = None
    reasoning: dict[str, Any] | None = None  # {"effort", "summary"}
    store: bool | None = True
    background: bool | None = False
    previous_response_id: Annotated[str, Field(max_length=MAX_ID_LEN)] | None = None
    metadata: MetadataMap | None = None
    include: Annotated[list[str], Field(max_length=MAX_LIST_LEN)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = 0
    truncation: Literal["auto", "disabled"] | None = "disabled"
    service_tier: str | None = "auto"
    # OpenAI features with no counterpart here: refused with a clear error rather than ignored.
    prompt: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: extra variables for the chat template
    add_special_tokens: bool = False  # the chat template writes the special tokens

    @model_validator(mode="after")
    def _auto_truncation(self) -> ResponsesRequest:
        """truncation "auto" drops the conversation's start when it does not fit the context."""
        if self.truncation == "auto" and self.truncate_prompt_tokens is None:
            self.truncate_prompt_tokens = -1
        return self


class InputTokensDetails(ResponseModel):
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    cache_write_tokens: int = 0  # the SDK's field; kvserve does not bill cache writes


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ResponseUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(ResponseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(ResponseModel):
    code: str
    message: str


class ResponseObject(ResponseModel):
    """The response object: what was generated, and the request's settings as the SDK's Response type
    expects them (echoed, with the sampling defaults the server resolved)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[dict[str, Any]]
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    parallel_tool_calls: bool
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = "auto"
    store: bool
    background: bool
    temperature: float
    top_p: float
    top_logprobs: int
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: str
    user: str | None = None
    metadata: dict[str, str]
