"""Python-call tool markup (Llama 3.2 / Llama 4 / ToolACE): the answer is a list of calls with keyword
arguments whose values are literals, optionally wrapped in <|python_start|> ... <|python_end|>:

    [get_weather(city="Paris", unit="celsius"), get_time()]

An answer that starts otherwise, or whose list is not only such calls, is plain content. The list is read
once it closes; text after it (other than whitespace and the end tag) is content.
"""

from __future__ import annotations

import ast
import json

from kvserve.text.tools.base import ParsedCall, ParsedOutput, ToolParser

START_TAG = "<|python_start|>"
END_TAG = "<|python_end|>"


class PythonicParser(ToolParser):
    def parse(self, text: str, final: bool) -> ParsedOutput:
        stripped = text.lstrip()
        if not final and (not stripped or START_TAG.startswith(stripped)):
            return ParsedOutput("")
        body = stripped[len(START_TAG) :] if stripped.startswith(START_TAG) else stripped
        list_start = len(text) - len(body.lstrip())
        if not text.startswith("[", list_start):
            return ParsedOutput("" if not final and not body.strip() else text)
        closed = _closed_list(text, list_start)
        if closed is None:
            return ParsedOutput(text if final else "")
        node, end = closed
        calls = _calls(node)
        if calls is None:
            return ParsedOutput(text)
        rest = text[end:].lstrip()
        rest = rest[len(END_TAG) :] if rest.startswith(END_TAG) else rest
        if not final and END_TAG.startswith(rest):
            rest = ""
        return ParsedOutput(rest if rest.strip() else "", tuple(calls))


def _closed_list(text: str, start: int) -> tuple[ast.List, int] | None:
    """The list literal starting at `start` once its closing bracket is there: its node and the index after."""
    end = text.find("]", start)
    while end >= 0:
        try:
            node = ast.parse(text[start : end + 1], mode="eval").body
        except SyntaxError:
            end = text.find("]", end + 1)
            continue
        return (node, end + 1) if isinstance(node, ast.List) else None
    return None


def _calls(node: ast.List) -> list[ParsedCall] | None:
    calls = []
    for element in node.elts:
        if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Name) or element.args:
            return None
        try:
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in element.keywords if kw.arg is not None}
        except ValueError:
            return None
        if len(arguments) != len(element.keywords):  # **kwargs
            return None
        try:
            calls.append(ParsedCall(element.func.id, json.dumps(arguments, ensure_ascii=False)))
        except TypeError:  # a literal JSON cannot hold (a set, bytes, a complex number)
            return None
    return calls
