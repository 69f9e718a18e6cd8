"""Request and response models of the pooling APIs, with vLLM's field names, defaults and shapes.

Every pooling request shares PoolingRequestBase (model, truncation, priority, request id) and takes its
input as `input` (a string, strings, token ids, or lists of token ids) or as chat `messages` rendered by
the chat template.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kvserve.api.openai.protocol_base import (
    ConversationFields,
    Int64,
    RequestModel,
    ResponseModel,
    UsageInfo,
    now,
    random_id,
)
from kvserve.api.pooling.vectors import EmbedDType, Encoding, Endianness

PromptInput = str | list[str] | list[int] | list[list[int]]
EncodingFormat = Literal["float", "base64"]


class PoolingRequestBase(RequestModel):
    model: str | None = None
    user: str | None = None
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    truncation_side: Literal["left", "right"] | None = None
    request_id: str | None = None
    priority: Int64 = 0


class InputFields(PoolingRequestBase, ConversationFields):
    """`input`, or chat `messages` (vLLM's chat form of the pooling requests: no generation prompt, and the
    template adds the special tokens)."""

    input: PromptInput | None = None
    add_generation_prompt: bool = False
    add_special_tokens: bool | None = None  # default: True for `input`, False for `messages` (vLLM's)


class EncodingFields(RequestModel):
    """How vectors are written (vLLM's names): embed_dtype and endianness apply to base64 only."""

    encoding_format: EncodingFormat = "float"
    embed_dtype: EmbedDType = "float32"
    endianness: Endianness = "native"

    def encoding(self) -> Encoding:
        return Encoding(self.encoding_format, self.embed_dtype, self.endianness)


class EmbedFields(EncodingFields):
    dimensions: int | None = None
    normalize: bool | None = None  # None: the model's default (sentence-transformers' Normalize module)
    use_activation: bool | None = None  # vLLM's newer name for normalize on embeddings

    def normalize_or_default(self) -> bool | None:
        return self.normalize if self.normalize is not None else self.use_activation


class PoolingRequest(InputFields, EmbedFields):
    task: Literal["embed", "token_embed", "classify"] | None = None  # default: what the model does


class ClassificationRequest(InputFields):
    use_activation: bool | None = None


ScoreInputs = str | list[str]


class ScoreRequest(PoolingRequestBase):
    """vLLM accepts the two sides under three pairs of names; they mean the same."""

    text_1: ScoreInputs | None = None
    text_2: ScoreInputs | None = None
    data_1: ScoreInputs | None = None
    data_2: ScoreInputs | None = None
    queries: ScoreInputs | None = None
    documents: ScoreInputs | None = None
    use_activation: bool | None = None

    def sides(self) -> tuple[ScoreInputs | None, ScoreInputs | None]:
        for first, second in ((self.text_1, self.text_2), (self.data_1, self.data_2), (self.queries, self.documents)):
            if first is not None or second is not None:
                return first, second
        return None, None


class RerankDocumentInput(RequestModel):
    text: str


class RerankRequest(PoolingRequestBase):
    """Jina's and Cohere's rerank body (vLLM serves both shapes at /rerank, /v1/rerank and /v2/rerank)."""

    query: str
    documents: list[str | RerankDocumentInput]
    top_n: int | None = None  # None or 0: every document
    return_documents: bool = True
    use_activation: bool | None = None

    def document_texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class PoolingResponseData(ResponseModel):
    index: int
    object: str = "pooling"
    data: list[float] | list[list[float]] | str


class ListResponse(ResponseModel):
    """The envelope of vLLM's pooling responses; each subclass names its `id` prefix and its `data` rows."""

    object: str = "list"
    created: int = Field(default_factory=now)
    model: str
    usage: UsageInfo


class PoolingResponse(ListResponse):
    id: str = Field(default_factory=lambda: f"pool-{random_id()}")
    data: list[PoolingResponseData]


class ClassificationData(ResponseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(ListResponse):
    id: str = Field(default_factory=lambda: f"classify-{random_id()}")
    data: list[ClassificationData]


class ScoreResponseData(ResponseModel):
    index: int
    object: str = "score"
    score: float


class ScoreResponse(ListResponse):
    id: str = Field(default_factory=lambda: f"score-{random_id()}")
    data: list[ScoreResponseData]


class RerankDocument(ResponseModel):
    text: str


class RerankResult(ResponseModel):
    index: int
    document: RerankDocument | None = None
    relevance_score: float


class RerankUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(ResponseModel):
    id: str = Field(default_factory=lambda: f"rerank-{random_id()}")
    model: str
    usage: RerankUsage
    results: list[RerankResult]
