"""What a request's output must match: the one description of a structured-output constraint.

A GrammarSpec is plain data: it travels inside SamplingParams from the API to the runner, and it is its own
cache key. The compiler (compiler.py) turns it into a grammar for the model's tokenizer; the runner's matchers
(matchers.py) follow it token by token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

GrammarKind = Literal["json", "json_object", "regex", "choice", "grammar"]
_KINDS = ("json", "json_object", "regex", "choice", "grammar")


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    kind: GrammarKind
    source: str = ""  # JSON schema text, a regex, the choices as a JSON list of strings, or an EBNF/Lark grammar
    disable_any_whitespace: bool = False  # JSON without whitespace between its tokens

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown structured output kind {self.kind!r}; choose one of {', '.join(_KINDS)}")

    @classmethod
    def json_schema(cls, schema: Any, disable_any_whitespace: bool = False) -> GrammarSpec:
        """From a schema object or its JSON text; objects are written with sorted keys, so equal schemas share
        a cache entry."""
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True, ensure_ascii=False)
        return cls("json", text, disable_any_whitespace)

    @classmethod
    def choices(cls, options: list[str]) -> GrammarSpec:
        return cls("choice", json.dumps(options, ensure_ascii=False))
