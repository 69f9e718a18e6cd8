"""Llama 3.1/3.2 JSON tool calls: the whole answer is one or more call objects, optionally after
<|python_tag|>, separated by semicolons:

    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}

An answer that starts otherwise is plain content. If its first object is not a call, the whole answer is
content; text after the last call that does not continue the sequence is content too.
"""

from __future__ import annotations

from kvserve.text.tools.base import ParsedCall, ParsedOutput, ToolParser, call_from_object, decode_json_value

PYTHON_TAG = "<|python_tag|>"
SEPARATOR = ";"


class Llama3JsonParser(ToolParser):
    def parse(self, text: str, final: bool) -> ParsedOutput:
        stripped = text.lstrip()
        if not final and (not stripped or PYTHON_TAG.startswith(stripped)):
            return ParsedOutput("")  # not yet known whether this answer is calls
        body_start = len(text) - len(stripped)
        if stripped.startswith(PYTHON_TAG):
            body_start += len(PYTHON_TAG)
        elif not stripped.startswith("{"):
            return ParsedOutput(text)
        calls: list[ParsedCall] = []
        position = body_start
        while True:
            decoded = decode_json_value(text, position)
            call = None if decoded is None else call_from_object(decoded[0])
            if call is None:
                rest = text[position:]
                if not calls:  # nothing decided yet: all of it is content once it can no longer become a call
                    return ParsedOutput(text if final or decoded is not None else "")
                if decoded is None and not final and _may_continue(rest):
                    return ParsedOutput("", tuple(calls))
                return ParsedOutput(rest if rest.strip() else "", tuple(calls))
            calls.append(call)
            position = decoded[1]
            after = text[position:].lstrip()
            if not after.startswith(SEPARATOR):
                if not final and _may_continue(text[position:]):
                    return ParsedOutput("", tuple(calls))
                rest = text[position:]
                return ParsedOutput(rest if rest.strip() else "", tuple(calls))
            position = len(text) - len(after) + len(SEPARATOR)


def _may_continue(rest: str) -> bool:
    """Whether text after a call may still turn out to be `; {next call}` (or trailing whitespace)."""
    stripped = rest.lstrip()
    if not stripped or stripped == SEPARATOR:
        return True
    if stripped.startswith(SEPARATOR):
        return stripped[1:].lstrip()[:1] in ("", "{")
    return stripped.startswith("{")
