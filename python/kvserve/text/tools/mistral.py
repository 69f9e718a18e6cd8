"""Mistral tool calls after the [TOOL_CALLS] token, in either of the two formats its tokenizers use:

    Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]
    Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}        (tokenizer v11+)

Text before the first [TOOL_CALLS] is content; markup that does not parse goes to content as written.
Call ids are 9 alphanumeric characters, which Mistral's chat templates require.
"""

from __future__ import annotations

import json
import random
import string

from kvserve.text.tools.base import (
    ParsedCall,
    ParsedOutput,
    ToolParser,
    call_from_object,
    decode_json_value,
    held_back_tail,
)

BOT = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_ID_ALPHABET = string.ascii_letters + string.digits


class MistralParser(ToolParser):
    def parse(self, text: str, final: bool) -> ParsedOutput:
        start = text.find(BOT)
        if start < 0:
            return ParsedOutput(text if final else text[: len(text) - held_back_tail(text, BOT)])
        head = text[:start]
        body = start + len(BOT)
        if text[body:].lstrip().startswith("["):
            return self._array(text, head, body, final)
        return self._named(text, head, start, final)

    @staticmethod
    def _array(text: str, head: str, body: int, final: bool) -> ParsedOutput:
        decoded = decode_json_value(text, body)
        if decoded is None:
            return ParsedOutput(head + (text[len(head) :] if final else ""))
        items, end = decoded
        calls = [call_from_object(item) for item in items] if isinstance(items, list) else [None]
        if not calls or None in calls:
            return ParsedOutput(text)
        rest = text[end:]
        return ParsedOutput(head + (rest if rest.strip() else ""), tuple(calls))

    @staticmethod
    def _named(text: str, head: str, start: int, final: bool) -> ParsedOutput:
        """name[ARGS]{...} blocks, each after its own [TOOL_CALLS]."""
        calls: list[ParsedCall] = []
        position = start
        while text.startswith(BOT, position):
            args = text.find(ARGS, position)
            name = text[position + len(BOT) : args].strip() if args >= 0 else ""
            decoded = decode_json_value(text, args + len(ARGS)) if args >= 0 and name else None
            if decoded is None or not isinstance(decoded[0], dict):
                if final or (args >= 0 and not name):
                    return ParsedOutput(head + text[position:], tuple(calls))
                return ParsedOutput(head, tuple(calls))
            calls.append(ParsedCall(name, json.dumps(decoded[0], ensure_ascii=False)))
            position = decoded[1]
            rest = text[position:]
            stripped = rest.lstrip()
            if not final and (not stripped or BOT.startswith(stripped)):  # another call may follow
                return ParsedOutput(head, tuple(calls))
            position += len(rest) - len(stripped)
        rest = text[position:]
        return ParsedOutput(head + (rest if rest.strip() else ""), tuple(calls))

    def call_id(self) -> str:
        return "".join(random.choices(_ID_ALPHABET, k=9))
