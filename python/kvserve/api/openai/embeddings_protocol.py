"""POST /v1/embeddings request and response models (OpenAI's, with vLLM's extras)."""

from __future__ import annotations

from pydantic import Field

from kvserve.api.openai.protocol_base import ResponseModel, UsageInfo, now, random_id
from kvserve.api.pooling.protocol import EncodingFormat, InputFields


class EmbeddingRequest(InputFields):
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = None
    normalize: bool | None = None  # vLLM's extra: None is the model's default (sentence-transformers' Normalize)


class EmbeddingResponseData(ResponseModel):
    index: int
    object: str = "embedding"
    embedding: list[float] | list[list[float]] | str


class EmbeddingResponse(ResponseModel):
    id: str = Field(default_factory=lambda: f"embd-{random_id()}")
    object: str = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[EmbeddingResponseData]
    usage: UsageInfo
