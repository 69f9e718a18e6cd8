"""Request/response base models and the pieces completions and chat share."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from kvserve.api.frontend.conversation import Conversation

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# Bounds on every number and list a request carries, so no value reaches the engine that a tensor, a C++
# field or a loop cannot hold (the finer, vLLM-worded checks stay in the front half, which runs after).
Int32 = Annotated[int, Field(le=INT32_MAX, ge=-INT32_MAX)]
Float = Annotated[float, Field(allow_inf_nan=False)]  # JSON has no NaN; 1e999 parses as inf
TokenIdList = Annotated[list[Int32], Field(max_length=1 << 16)]
MAX_LIST_LEN = 1 << 12  # stop strings, bad words, tools, logit_bias entries (checked finer downstream)
MAX_MESSAGES = 1 << 14
MAX_ID_LEN = 1 << 10  # request_id, user
MAX_REQUEST_TIMEOUT = 1e7  # seconds (115 days): beyond any deadline, and within what a timer can hold


def random_id() -> str:
    return uuid.uuid4().hex


class RequestModel(BaseModel):
    """Requests accept fields they do not know (clients send vendor extras); those are logged and ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _log_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(cls.model_fields) - {f.alias for f in cls.model_fields.values() if f.alias}
            if unknown:
                logger.info("ignoring unknown request fields: %s", ", ".join(sorted(unknown)))
        return data


class StreamOptions(RequestModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class ResponseFormat(RequestModel):
    type: str
    json_schema: dict[str, Any] | None = None  # {"name", "schema", "strict", "description"}


class StructuredOutputsParams(RequestModel):
    """vLLM's structured_outputs: exactly one of json, regex, choice, grammar, json_object."""

    json_: str | dict[str, Any] | bool | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    # Accepted and ignored, as in vLLM with a backend that does not use them.
    disable_fallback: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None


class UnsupportedFields(RequestModel):
    """vLLM request fields that change what a request means but kvserve does not implement yet: setting one
    is a clear 501, never silently ignored."""

    use_beam_search: bool = False
    prompt_embeds: Any = None
    logprob_token_ids: Any = None

    def unsupported_fields(self) -> list[str]:
        return [name for name in UnsupportedFields.model_fields if getattr(self, name) not in (None, False)]


class ConversationFields(RequestModel):
    """The chat-template fields of chat completions and /tokenize (vLLM's names and defaults)."""

    messages: Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_LIST_LEN)] | None = None
    documents: Annotated[list[dict[str, str]], Field(max_length=MAX_LIST_LEN)] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def conversation(self) -> Conversation:
        return Conversation(
            messages=self.messages or [],
            add_generation_prompt=self.add_generation_prompt,
            continue_final_message=self.continue_final_message,
            tools=self.tools,
            documents=self.documents,
            chat_template=self.chat_template,
            chat_template_kwargs=self.chat_template_kwargs,
        )


class GenerationRequest(UnsupportedFields):
    """The fields completions and chat completions share, with vLLM's names and defaults."""

    model: str | None = None
    frequency_penalty: Float | None = None
    logit_bias: Annotated[dict[str, Float], Field(max_length=MAX_LIST_LEN)] | None = None
    presence_penalty: Float | None = None
    seed: Int64 | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_LIST_LEN)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    user: Annotated[str, Field(max_length=MAX_ID_LEN)] | None = None
    response_format: ResponseFormat | None = None
    # vLLM's structured outputs, and the older guided_* fields that mean the same
    structured_outputs: StructuredOutputsParams | None = None
    guided_json: str | dict[str, Any] | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    # vLLM's sampling extras
    top_k: Int32 | None = None
    min_p: Float | None = None
    repetition_penalty: Float | None = None
    stop_token_ids: TokenIdList | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: Int32 = 0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None
    truncation_side: Literal["left", "right"] | None = None
    allowed_token_ids: TokenIdList | None = None
    prompt_logprobs: Int32 | None = None
    bad_words: Annotated[list[str], Field(max_length=MAX_LIST_LEN)] = Field(default_factory=list)
    add_special_tokens: bool = True
    # vLLM's other extras
    priority: Int64 = 0
    request_id: Annotated[str, Field(max_length=MAX_ID_LEN)] | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = None
    # kvserve's: seconds this request may take, queueing included (at most the server's --request-timeout)
    request_timeout: Annotated[float, Field(gt=0, le=MAX_REQUEST_TIMEOUT, allow_inf_nan=False)] | None = None


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptTokensDetails(ResponseModel):
    cached_tokens: int | None = None


class CompletionTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class UsageInfo(ResponseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None  # with --reasoning-parser only

    @model_serializer(mode="wrap")
    def _without_unused_details(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("completion_tokens_details", 0) is None:  # vLLM's usage has no such key
            del data["completion_tokens_details"]
        return data


def now() -> int:
    return int(time.time())
