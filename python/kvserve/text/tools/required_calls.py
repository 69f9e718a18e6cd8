"""The answer of a `tool_choice: "required"` request: a JSON array of calls, which the request's grammar
enforces (see kvserve.structured.tool_schemas):

    [{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "get_time", "parameters": {}}]

Each call is taken as soon as its object closes, so a stream sends them one by one. Only a length-cut answer
can break off mid-array: what follows the last whole call is then content as written.
"""

from __future__ import annotations

from kvserve.text.tools.base import ParsedCall, ParsedOutput, ToolParser, call_from_object, decode_json_value


class RequiredCallsParser(ToolParser):
    keeps_special_tokens = False

    def parse(self, text: str, final: bool) -> ParsedOutput:
        calls: list[ParsedCall] = []
        position = len(text) - len(text.lstrip())
        if not text.startswith("[", position):
            return ParsedOutput(text if final or text.strip() else "")
        position += 1
        while True:
            decoded = decode_json_value(text, position)
            call = None if decoded is None else call_from_object(decoded[0])
            if call is None:
                return ParsedOutput(text[position:] if final or decoded is not None else "", tuple(calls))
            calls.append(call)
            position = decoded[1]
            rest = text[position:].lstrip()
            if rest.startswith(","):
                position = len(text) - len(rest) + 1
                continue
            if rest.startswith("]"):
                after = rest[1:]
                return ParsedOutput(after if after.strip() else "", tuple(calls))
            if not final and not rest:
                return ParsedOutput("", tuple(calls))
            return ParsedOutput(text[position:], tuple(calls))
