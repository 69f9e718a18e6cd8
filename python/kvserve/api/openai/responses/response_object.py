"""A response object at any point of its life: queued, in progress, finished (completed, incomplete), cancelled
or failed. What it echoes of the request is decided once, when the request is accepted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvserve.api.openai.protocol_base import now
from kvserve.api.openai.responses.protocol import (
    IncompleteDetails,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
)
from kvserve.api.openai.responses.text_format import DEFAULT_TEXT
from kvserve.outputs import RequestOutput
from kvserve.sampling_params import SamplingParams


def finished_status(output: RequestOutput) -> ResponseStatus:
    """A finished generation's status: cut by the token limit is incomplete, aborted is cancelled."""
    if output.finish_reason == "length":
        return "incomplete"
    if output.finish_reason == "abort":
        return "cancelled"
    return "completed"


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    id: str
    model: str
    settings: dict[str, Any]  # the request's settings as the response echoes them
    created_at: int

    @classmethod
    def of(
        cls, body: ResponsesRequest, response_id: str, model: str, params: SamplingParams, store: bool
    ) -> ResponseHeader:
        settings = {
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": body.max_tool_calls,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": body.reasoning,
            "service_tier": body.service_tier,
            "store": store,
            "background": bool(body.background),
            "temperature": params.temperature,  # as resolved: the request's, the model's default or OpenAI's
            "top_p": params.top_p,
            "top_logprobs": body.top_logprobs or 0,
            "text": body.text or DEFAULT_TEXT,
            "tool_choice": body.tool_choice,
            "tools": body.tools,
            "truncation": body.truncation or "disabled",
            "user": body.user,
            "metadata": body.metadata or {},
        }
        return cls(response_id, model, settings, now())

    def response(
        self,
        status: ResponseStatus,
        output: list[dict[str, Any]] | None = None,
        usage: ResponseUsage | None = None,
        error: ResponseError | None = None,
    ) -> ResponseObject:
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=output or [],
            usage=usage,
            error=error,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            **self.settings,
        )
