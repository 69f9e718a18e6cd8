"""The reasoning parsers --reasoning-parser can name. A new format is one module and one line here."""

from __future__ import annotations

from kvserve.text.reasoning.think_tags import DeepSeekR1Parser, Qwen3Parser, ThinkTagParser

REASONING_PARSERS: dict[str, type[ThinkTagParser]] = {
    "deepseek_r1": DeepSeekR1Parser,
    "qwen3": Qwen3Parser,
}


def reasoning_parser(name: str) -> ThinkTagParser:
    try:
        return REASONING_PARSERS[name]()
    except KeyError:
        raise ValueError(f"unknown reasoning parser {name!r}; choose one of {', '.join(REASONING_PARSERS)}") from None
