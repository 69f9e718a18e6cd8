"""POST /generative_scoring: request and response models (vLLM's field names and defaults)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kvserve.api.openai.protocol_base import Int64, RequestModel, ResponseModel, UsageInfo, now

TokenId = Annotated[int, Field(ge=0)]


class GenerativeScoringRequest(RequestModel):
    model: str | None = None
    query: str | list[TokenId]
    items: list[str] | list[list[TokenId]]
    label_token_ids: list[int]
    apply_softmax: bool = True  # normalise over the label tokens only; False: the model's probabilities
    item_first: bool = False  # item + query instead of query + item
    add_special_tokens: bool = True  # for the query; items never get special tokens
    priority: Int64 = 0
    request_id: str | None = None


class GenerativeScoringItemResult(ResponseModel):
    index: int
    object: Literal["score"] = "score"
    score: float  # the probability of the first label token


class GenerativeScoringResponse(ResponseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[GenerativeScoringItemResult]
    usage: UsageInfo
