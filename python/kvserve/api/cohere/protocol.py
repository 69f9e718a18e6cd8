"""Cohere's embed request and responses: v1 (/v1/embed) and v2 (/v2/embed), as the cohere SDK sends and
reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kvserve.api.openai.protocol_base import RequestModel, ResponseModel, random_id

CohereEmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
CohereInputType = Literal["search_document", "search_query", "classification", "clustering"]


class CohereEmbedRequest(RequestModel):
    model: str | None = None
    texts: list[str] | None = None
    images: list[Any] | None = None
    inputs: list[Any] | None = None
    input_type: CohereInputType | None = None
    embedding_types: list[CohereEmbeddingType] | None = None
    truncate: Literal["NONE", "START", "END"] = "END"
    output_dimension: int | None = None
    max_tokens: int | None = None
    priority: int = 0
    request_id: str | None = None


class CohereApiVersion(ResponseModel):
    version: str


class CohereBilledUnits(ResponseModel):
    input_tokens: int


class CohereMeta(ResponseModel):
    api_version: CohereApiVersion
    billed_units: CohereBilledUnits


class CohereEmbedResponse(ResponseModel):
    """v1 with embedding_types and v2: `embeddings` by type. v1 without them: a plain list of floats."""

    id: str = Field(default_factory=random_id)
    response_type: Literal["embeddings_floats", "embeddings_by_type"]
    embeddings: dict[str, list] | list[list[float]]
    texts: list[str]
    meta: CohereMeta
