"""One choice's output text -> reasoning, content and tool calls; streamed as the differences between successive
parses of the text so far.

The reasoning parser splits the text first; the tool parser reads only the answer after the reasoning. Both are
monotone (see kvserve.text.tools.base), so every delta only appends, and the deltas of a stream concatenate to
the message that parsing the whole text gives, however the text was cut. A call appears in a delta once with its
name; its arguments may grow over later deltas (only a named tool choice, whose whole answer is the arguments,
streams them piece by piece: the other parsers emit whole calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.text.reasoning.think_tags import ThinkTagParser
from kvserve.text.tools.base import ParsedCall, ToolParser


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    reasoning: str
    content: str
    calls: tuple[ParsedCall, ...]
    reasoning_ended: bool = False


@dataclass(slots=True)
class CallDelta:
    index: int
    name: str | None  # set in the call's first delta only
    arguments: str


@dataclass(slots=True)
class MessageDelta:
    reasoning: str = ""
    content: str = ""
    calls: list[CallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.calls)


@dataclass(frozen=True, slots=True)
class MessageParser:
    """How a request's output is read: an optional reasoning parser, then at most one of a tool parser (tool
    choice auto or required) and a named function whose arguments are the whole answer."""

    reasoning: ThinkTagParser | None = None
    tools: ToolParser | None = None
    named_function: str | None = None
    max_calls: int | None = None  # parallel_tool_calls false: later calls are dropped

    def parse(self, text: str, final: bool) -> ParsedMessage:
        reasoning, answer, ended = "", text, False
        if self.reasoning is not None:
            split = self.reasoning.split(text, final)
            reasoning, answer, ended = split.reasoning, split.content, split.ended
        if self.named_function is not None:
            calls = (ParsedCall(self.named_function, answer),) if answer or final else ()
            return ParsedMessage(reasoning, "", calls, ended)
        if self.tools is not None:
            parsed = self.tools.parse(answer, final)
            return ParsedMessage(reasoning, parsed.content, parsed.calls[: self.max_calls], ended)
        return ParsedMessage(reasoning, answer, (), ended)


class MessageStream:
    """The parse of one choice's text as it grows; `feed` returns what the new text decided."""

    __slots__ = ("parser", "text", "sent")

    def __init__(self, parser: MessageParser) -> None:
        self.parser = parser
        self.text = ""
        self.sent = ParsedMessage("", "", ())

    def feed(self, text: str, final: bool) -> MessageDelta:
        self.text += text
        now = self.parser.parse(self.text, final)
        before = self.sent
        delta = MessageDelta(now.reasoning[len(before.reasoning) :], now.content[len(before.content) :])
        for index, call in enumerate(now.calls):
            if index >= len(before.calls):
                delta.calls.append(CallDelta(index, call.name, call.arguments))
            elif len(call.arguments) > len(before.calls[index].arguments):
                delta.calls.append(CallDelta(index, None, call.arguments[len(before.calls[index].arguments) :]))
        self.sent = now
        return delta
