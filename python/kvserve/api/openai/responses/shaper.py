"""A response's engine output -> the response object, or its SSE events (`event: <type>` / `data: <json>`, each
with the next `sequence_number`): response.created, response.in_progress, the output items' events (see
output_items.py), then response.completed, or response.incomplete when max_output_tokens cut the answer (or
`error` and response.failed when the request fails after the start).

The stream runs in ShaperBase's loop; a delta's events come from the same OutputItems that builds the
non-streamed output, so the items streamed are the items of the final response, ids included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from kvserve.api.context import ServingContext
from kvserve.api.frontend.generations import Generation
from kvserve.api.openai.request_options import RequestOptions
from kvserve.api.openai.responses.output_items import ItemStatus, OutputItems
from kvserve.api.openai.responses.protocol import (
    InputTokensDetails,
    OutputTokensDetails,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from kvserve.api.openai.responses.response_object import ResponseHeader, finished_status
from kvserve.api.openai.shaper import ShaperBase
from kvserve.api.openai.tool_choice import ToolPlan
from kvserve.errors import KvserveError
from kvserve.outputs import RequestOutput
from kvserve.text.message_parser import CallDelta, MessageDelta, MessageStream
from kvserve.text.reasoning.think_tags import reasoning_token_count

Event = dict[str, Any]


def sse_events(events: list[Event], first_sequence_number: int) -> bytes:
    """Named SSE events, numbered from `first_sequence_number`."""
    frames = []
    for number, event in enumerate(events, first_sequence_number):
        event["sequence_number"] = number
        frames.append(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
    return b"".join(frames)


class ResponsesShaper(ShaperBase):
    body: ResponsesRequest

    def __init__(
        self,
        body: ResponsesRequest,
        options: RequestOptions,
        accepted: list[RequestOutput],
        ctx: ServingContext,
        plan: ToolPlan,
        header: ResponseHeader,
        on_done: Callable[[ResponseObject], None],
    ) -> None:
        super().__init__(body, options, header.model, accepted, ctx)
        self.header = header
        self.on_done = on_done  # given the finished response (to store it)
        self.parser = plan.message_parser(ctx.settings)
        self.message = MessageStream(self.parser) if self.parser is not None else None
        self.delta = MessageDelta()
        self.items = OutputItems()
        self.sequence_number = 0
        self.opened = False
        self.tokenizer = ctx.engine.tokenizer

    @property
    def logprobs_requested(self) -> bool:
        return False

    @property
    def text_only_deltas(self) -> bool:
        return self.parser is None

    def usage_of(self, results: list[RequestOutput]) -> ResponseUsage:
        result = results[0]
        reasoning = 0
        if self.parser is not None and self.parser.reasoning is not None:
            reasoning = reasoning_token_count(self.parser.reasoning, result.text, result.token_ids, self.tokenizer)
        return ResponseUsage(
            input_tokens=result.num_prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=result.num_cached_tokens),
            output_tokens=result.num_output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
            total_tokens=result.num_prompt_tokens + result.num_output_tokens,
        )

    def _finished(self, results: list[RequestOutput]) -> tuple[ResponseObject, ItemStatus]:
        status = finished_status(results[0])
        item_status: ItemStatus = "completed" if status == "completed" else "incomplete"
        response = self.header.response(status, self.items.output(item_status), self.usage_of(results))
        self.on_done(response)
        return response, item_status

    def response(self, results: list[RequestOutput]) -> ResponseObject:
        text = results[0].text
        if self.parser is None:
            whole = MessageDelta(content=text)
        else:
            parsed = self.parser.parse(text, final=True)
            calls = [CallDelta(i, call.name, call.arguments) for i, call in enumerate(parsed.calls)]
            whole = MessageDelta(parsed.reasoning, parsed.content, calls)
        self.items.apply(whole)
        return self._finished(results)[0]

    # -- streaming ------------------------------------------------------------------------------------------
    def _sse(self, events: list[Event]) -> bytes:
        frames = sse_events(events, self.sequence_number)
        self.sequence_number += len(events)
        return frames

    def delta_text(self, index: int, output: RequestOutput, first: bool) -> str:
        if self.message is None:
            self.delta = MessageDelta(content=output.text)
        else:
            self.delta = self.message.feed(output.text, output.finished)
        return self.delta.content

    def worth_sending(self, index: int, text: str, output: RequestOutput, first: bool) -> bool:
        return bool(self.delta)

    def delta_choice(self, index: int, output: RequestOutput, text: str, first: bool, text_offset: int) -> list[Event]:
        return self.items.apply(self.delta)

    def chunk(self, choices: list[Any], **extra: Any) -> bytes:
        """Usage and the fingerprint (`extra`) are the final response's, not the deltas'."""
        return self._sse([event for events in choices for event in events])

    def plain_chunk(self, index: int, text: str) -> bytes:
        return self._sse(self.items.apply(MessageDelta(content=text)))

    def opening_chunks(self, num_choices: int) -> Iterator[bytes]:
        self.opened = True
        snapshot = self.header.response("in_progress").model_dump()
        yield self._sse(
            [{"type": "response.created", "response": snapshot}, {"type": "response.in_progress", "response": snapshot}]
        )

    async def stream(self, generations: list[Generation]) -> AsyncIterator[bytes]:
        """ShaperBase's loop; a failure after the start (a timeout, a dead engine) ends it as OpenAI's streams
        end: an `error` event, then `response.failed` (the failed response is stored like a finished one)."""
        try:
            async for chunk in super().stream(generations):
                yield chunk
        except KvserveError as e:
            failed = self.header.response("failed", error=ResponseError(code=e.error_type, message=e.message))
            self.on_done(failed)
            error = {"type": "error", "code": e.error_type, "message": e.message, "param": e.param}
            yield self._sse([error, {"type": "response.failed", "response": failed.model_dump()}])

    def closing_chunks(self) -> Iterator[bytes]:
        if not self.opened:  # nothing was generated: the stream still opens before it closes
            yield from self.opening_chunks(1)
        response, item_status = self._finished(self.accepted)
        kind = "response.completed" if response.status == "completed" else "response.incomplete"
        yield self._sse([*self.items.close(item_status), {"type": kind, "response": response.model_dump()}])
