"""/tokenize and /detokenize request models (vLLM's field names)."""

from __future__ import annotations

from kvserve.api.openai.protocol_base import ConversationFields, Int32, RequestModel


class TokenizeRequest(ConversationFields):
    model: str | None = None
    prompt: str | None = None
    add_special_tokens: bool | None = None  # default: True for prompts, False for messages
    return_token_strs: bool | None = False


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: list[Int32]
