"""POST /v1/embeddings request and response models (OpenAI's, with vLLM's extras)."""

from __future__ import annotations

from pydantic import Field

from kvserve.api.openai.protocol_base import ResponseModel, random_id
from kvserve.api.pooling.protocol import EmbedFields, InputFields, ListResponse


class EmbeddingRequest(InputFields, EmbedFields):
    pass


class EmbeddingResponseData(ResponseModel):
    index: int
    object: str = "embedding"
    embedding: list[float] | list[list[float]] | str


class EmbeddingResponse(ListResponse):
    id: str = Field(default_factory=lambda: f"embd-{random_id()}")
    data: list[EmbeddingResponseData]
