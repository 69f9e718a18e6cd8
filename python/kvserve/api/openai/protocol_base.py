"""Request/response base models and the pieces completions and chat share."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


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


class UnsupportedFields(RequestModel):
    """vLLM request fields that change what a request means but kvserve does not implement yet: setting one
    is a clear 501, never silently ignored."""

    use_beam_search: bool = False
    prompt_embeds: Any = None
    structured_outputs: Any = None
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    logprob_token_ids: Any = None

    def unsupported_fields(self) -> list[str]:
        return [name for name in UnsupportedFields.model_fields if getattr(self, name) not in (None, False)]


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(RequestModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class PromptTokensDetails(ResponseModel):
    cached_tokens: int | None = None


class UsageInfo(ResponseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class ResponseFormat(RequestModel):
    type: str
    json_schema: dict[str, Any] | None = None


def now() -> int:
    return int(time.time())
