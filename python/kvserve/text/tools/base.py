"""What a tool-call parser reads out of a model's text, and the rule that keeps streams and final messages equal.

A parser is a pure function of the text generated so far: `parse(text, final)` returns the content and the
calls that `text` already decides. It must be *monotone*: for any text t2 that extends t1,

    parse(t1, False).content  is a prefix of  parse(t2, ...).content
    parse(t1, False).calls    is a prefix of  parse(t2, ...).calls     (whole calls, never half of one)

so a stream that sends the difference between successive parses concatenates, for every way the text was cut
into deltas, to the message that parse(whole text, final=True) gives. A parser keeps back what is undecided:
the tail that may be the start of a tag, an open call block. A call is emitted only once its markup is complete
and parsed, so a stream never carries arguments that the final message would not, and markup that fails to
parse becomes content (never malformed JSON in `arguments`).
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object's text


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    content: str
    calls: tuple[ParsedCall, ...] = ()


class ToolParser(ABC):
    """One model family's tool-call markup. Stateless: one instance serves every request."""

    # The markup's tags are special tokens in the models that use them; detokenizing must keep them.
    keeps_special_tokens = True

    @abstractmethod
    def parse(self, text: str, final: bool) -> ParsedOutput: ...

    def call_id(self) -> str:
        return tool_call_id()


def tool_call_id() -> str:
    """vLLM's default tool-call id."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def held_back_tail(text: str, tag: str) -> int:
    """How many final characters of `text` could be the start of `tag` (and so are not content yet)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


def call_from_object(value: Any, arguments_keys: tuple[str, ...] = ("arguments", "parameters")) -> ParsedCall | None:
    """{"name": ..., "arguments": {...}} (or "parameters") as a call; None when it is not one. Arguments given
    as JSON text are parsed, so `arguments` is always an object's JSON; a call without them has {}."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments: Any = {}
    for key in arguments_keys:
        if key in value:
            arguments = value[key]
            break
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(value["name"], json.dumps(arguments, ensure_ascii=False))


_DECODER = json.JSONDecoder()


def decode_json_value(text: str, start: int) -> tuple[Any, int] | None:
    """The JSON value at `start` (after whitespace) and the index after it; None while it is incomplete or
    invalid. Only objects and arrays are taken: a number or literal could still grow."""
    index = start
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text) or text[index] not in "{[":
        return None
    try:
        return _DECODER.raw_decode(text, index)
    except json.JSONDecodeError:
        return None
