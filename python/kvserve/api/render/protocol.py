"""The render routes' response: vLLM's token-in generate request (its GenerateRequest)."""

from __future__ import annotations

from typing import Any

from kvserve.api.openai.protocol_base import ResponseModel, StreamOptions


class RenderedRequest(ResponseModel):
    request_id: str
    token_ids: list[int]  # the prompt after templating and tokenization, as the engine would run it
    features: dict[str, Any] | None = None  # multimodal features: none for text prompts
    sampling_params: dict[str, Any]  # resolved: defaults applied, max_tokens fitted to the context
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    cache_salt: str | None = None
    priority: int = 0
    kv_transfer_params: dict[str, Any] | None = None
