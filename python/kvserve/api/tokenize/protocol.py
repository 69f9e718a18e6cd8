"""/tokenize and /detokenize request models (vLLM's field names)."""

from __future__ import annotations

from typing import Any

from kvserve.api.openai.protocol_base import RequestModel


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool | None = None  # default: True for prompts, False for messages
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool | None = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    documents: list[dict[str, str]] | None = None


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: list[int]
