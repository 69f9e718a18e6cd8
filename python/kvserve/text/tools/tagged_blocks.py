"""Calls written as JSON inside start/end tags, with free text around them (Hermes, Qwen):

    Let me check.<tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>{"name": "get_time", "arguments": {}}</tool_call>

Text before the first block is content. A block whose JSON is a call becomes a call; one that is not (or an
unterminated block whose JSON is not complete when generation ends) goes to content as written. Text between
or after blocks is content unless it is only whitespace.
"""

from __future__ import annotations

import json

from kvserve.text.tools.base import ParsedCall, ParsedOutput, ToolParser, call_from_object, held_back_tail


class TaggedBlocksParser(ToolParser):
    start_tag = "<tool_call>"
    end_tag = "</tool_call>"

    def parse(self, text: str, final: bool) -> ParsedOutput:
        content: list[str] = []
        calls: list[ParsedCall] = []
        position = 0
        first = True
        while True:
            start = text.find(self.start_tag, position)
            if start < 0:
                content.append(self._free_text(text[position:], first, final))
                break
            between = text[position:start]
            content.append(between if first or between.strip() else "")
            first = False
            body_start = start + len(self.start_tag)
            end = text.find(self.end_tag, body_start)
            if end < 0:
                if final:  # unterminated at the end: a call if its JSON is complete, else text
                    call = self._call(text[body_start:])
                    content.append("" if call else text[start:])
                    calls.extend([call] if call else [])
                break
            position = end + len(self.end_tag)
            call = self._call(text[body_start:end])
            if call is None:
                content.append(text[start:position])
            else:
                calls.append(call)
        return ParsedOutput("".join(content), tuple(calls))

    def _free_text(self, text: str, first: bool, final: bool) -> str:
        """Text with no block after it (yet): all of it before the first block; after a block, only text
        that is more than whitespace. Not final: minus a tail that may begin a tag, and whitespace that a
        block may still follow."""
        if not final:
            text = text[: len(text) - held_back_tail(text, self.start_tag)]
        if first or text.strip():
            return text
        return ""

    @staticmethod
    def _call(body: str) -> ParsedCall | None:
        try:
            return call_from_object(json.loads(body))
        except json.JSONDecodeError:
            return None


class HermesParser(TaggedBlocksParser):
    """Hermes 2 Pro / Qwen 2.5+ tool markup."""
