"""The tool-call parsers --tool-call-parser can name. A new format is one module and one line here."""

from __future__ import annotations

from kvserve.text.tools.base import ToolParser
from kvserve.text.tools.llama3_json import Llama3JsonParser
from kvserve.text.tools.mistral import MistralParser
from kvserve.text.tools.pythonic import PythonicParser
from kvserve.text.tools.tagged_blocks import HermesParser

TOOL_PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesParser,
    "llama3_json": Llama3JsonParser,
    "mistral": MistralParser,
    "pythonic": PythonicParser,
}


def tool_parser(name: str) -> ToolParser:
    try:
        return TOOL_PARSERS[name]()
    except KeyError:
        raise ValueError(f"unknown tool call parser {name!r}; choose one of {', '.join(TOOL_PARSERS)}") from None
