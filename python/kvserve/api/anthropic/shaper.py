"""One Messages request's engine outputs -> its Message body, or its stream of events.

A stream is message_start, ping, then per content block content_block_start, its deltas (thinking_delta
then signature_delta, text_delta, or input_json_delta) and content_block_stop, then message_delta (stop
reason, usage) and message_stop. With a message parser (--reasoning-parser, tools) the text goes through a
MessageStream, so the streamed blocks concatenate to the blocks of the non-streamed message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from kvserve.api.anthropic.protocol import (
    ContentBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
    tool_use_id,
)
from kvserve.api.frontend.generations import Generation, merge
from kvserve.api.sse import named_sse_event
from kvserve.outputs import RequestOutput
from kvserve.text.message_parser import MessageDelta, MessageParser, MessageStream
from kvserve.text.tools.base import ParsedCall


def stop_reason(output: RequestOutput, num_calls: int) -> tuple[str, str | None]:
    """Anthropic's stop reason and matched stop sequence. A finished answer that holds tool calls stops for
    tool_use, as Anthropic's own answers do, forced calls (tool_choice any or tool) included."""
    if output.finish_reason == "length":
        return "max_tokens", None
    if num_calls:
        return "tool_use", None
    if isinstance(output.stop_reason, str):  # a matched stop string; an int is a stop token (EOS)
        return "stop_sequence", output.stop_reason
    return "end_turn", None


def _signature() -> str:
    # Clients send thinking blocks back with their signature; nothing here verifies it, so any token will do.
    return tool_use_id().removeprefix("toolu_")


def _event(payload: dict[str, Any]) -> bytes:
    return named_sse_event(payload["type"], payload)


class MessageShaper:
    def __init__(self, message_id: str, model: str, accepted: RequestOutput, parser: MessageParser | None) -> None:
        self.message_id = message_id
        self.model = model
        self.accepted = accepted
        self.parser = parser

    def usage(self, output: RequestOutput) -> Usage:
        return Usage(input_tokens=output.num_prompt_tokens, output_tokens=output.num_output_tokens)

    # -- the whole message ---------------------------------------------------------------------------------
    def message(self, result: RequestOutput) -> Message:
        content: list[ContentBlock] = []
        calls: tuple[ParsedCall, ...] = ()
        if self.parser is None:
            text = result.text
        else:
            parsed = self.parser.parse(result.text, final=True)
            if parsed.reasoning:
                content.append(ThinkingBlock(thinking=parsed.reasoning, signature=_signature()))
            text, calls = parsed.content, parsed.calls
        if text:
            content.append(TextBlock(text=text))
        for call in calls:
            content.append(_tool_use_block(call))
        reason, sequence = stop_reason(result, len(calls))
        return Message(
            id=self.message_id,
            model=self.model,
            content=content,
            stop_reason=reason,
            stop_sequence=sequence,
            usage=self.usage(result),
        )

    # -- the stream ----------------------------------------------------------------------------------------
    async def events(self, generations: list[Generation]) -> AsyncIterator[bytes]:
        start = Message(
            id=self.message_id, model=self.model, content=[], stop_reason=None, usage=self.usage(self.accepted)
        )
        yield _event({"type": "message_start", "message": start.model_dump()})
        yield _event({"type": "ping"})
        stream = MessageStream(self.parser) if self.parser is not None else None
        blocks = _BlockWriter()
        async for _, output in merge(generations):
            self.accepted.merge(output)
            delta = (
                stream.feed(output.text, output.finished) if stream is not None else MessageDelta(content=output.text)
            )
            for event in blocks.write(delta):
                yield event
        for event in blocks.close():
            yield event
        result = self.accepted
        reason, sequence = stop_reason(result, blocks.num_calls)
        usage = {"input_tokens": result.num_prompt_tokens, "output_tokens": result.num_output_tokens}
        yield _event(
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage}
        )
        yield _event({"type": "message_stop"})


def _tool_use_block(call: ParsedCall) -> ContentBlock:
    """A parsed call as a tool_use block; arguments that are not a JSON object (a call cut short by max_tokens)
    come back as the text the model wrote."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        return TextBlock(text=call.arguments)
    return ToolUseBlock(id=tool_use_id(), name=call.name, input=arguments)


class _BlockWriter:
    """Opens, feeds and closes content blocks as a message's deltas arrive: one block is open at a time, and a
    delta of another kind (thinking, text, a new call) closes it and opens the next."""

    def __init__(self) -> None:
        self.index = -1  # of the open block
        self.open: str | None = None  # "thinking", "text" or "tool_use"
        self.num_calls = 0

    def write(self, delta: MessageDelta) -> Iterator[bytes]:
        if delta.reasoning:
            yield from self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            yield self._delta({"type": "thinking_delta", "thinking": delta.reasoning})
        if delta.content:
            yield from self._ensure("text", {"type": "text", "text": ""})
            yield self._delta({"type": "text_delta", "text": delta.content})
        for call in delta.calls:
            if call.name is not None:  # a new call: its own block
                yield from self._close()
                self.num_calls += 1
                yield from self._start(
                    "tool_use", {"type": "tool_use", "id": tool_use_id(), "name": call.name, "input": {}}
                )
            if call.arguments:
                yield self._delta({"type": "input_json_delta", "partial_json": call.arguments})

    def close(self) -> Iterator[bytes]:
        yield from self._close()

    def _ensure(self, kind: str, block: dict[str, Any]) -> Iterator[bytes]:
        if self.open != kind:
            yield from self._close()
            yield from self._start(kind, block)

    def _start(self, kind: str, block: dict[str, Any]) -> Iterator[bytes]:
        self.index += 1
        self.open = kind
        yield _event({"type": "content_block_start", "index": self.index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event({"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> Iterator[bytes]:
        if self.open is None:
            return
        if self.open == "thinking":
            yield self._delta({"type": "signature_delta", "signature": _signature()})
        yield _event({"type": "content_block_stop", "index": self.index})
        self.open = None
