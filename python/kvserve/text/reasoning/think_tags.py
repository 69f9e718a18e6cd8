"""Reasoning between <think> and </think> (DeepSeek R1, Qwen3), split from the answer that follows.

Like the tool parsers (kvserve.text.tools.base), `split(text, final)` is monotone: reasoning and content of a
text are prefixes of those of any longer text, so streamed deltas concatenate to the final message. What may
be a tag's beginning is held back until it is known.

The two models differ only when the answer does not start with <think>:
- deepseek_r1: its chat template writes <think> into the prompt, so the output starts inside the reasoning:
  everything up to </think> is reasoning (all of it, when </think> never comes).
- qwen3: thinking is optional (enable_thinking), so an output that does not start with <think> is all answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvserve.text.tools.base import held_back_tail
from kvserve.tokenizer import Tokenizer

START_TAG = "<think>"
END_TAG = "</think>"


@dataclass(frozen=True, slots=True)
class ReasoningSplit:
    reasoning: str
    content: str
    ended: bool  # the end tag was seen: what follows is the answer


class ThinkTagParser:
    start_tag = START_TAG
    end_tag = END_TAG
    starts_in_reasoning = True  # without a start tag, the output still begins as reasoning

    def split(self, text: str, final: bool) -> ReasoningSplit:
        stripped = text.lstrip()
        if not final and self.start_tag.startswith(stripped):
            return ReasoningSplit("", "", False)  # may still be the start tag
        if stripped.startswith(self.start_tag):
            body = stripped[len(self.start_tag) :]
        elif self.starts_in_reasoning:
            body = text
        else:
            return ReasoningSplit("", text, False)
        end = body.find(self.end_tag)
        if end < 0:
            held = 0 if final else held_back_tail(body, self.end_tag)
            return ReasoningSplit(body[: len(body) - held], "", False)
        return ReasoningSplit(body[:end], body[end + len(self.end_tag) :], True)


class DeepSeekR1Parser(ThinkTagParser):
    starts_in_reasoning = True


class Qwen3Parser(ThinkTagParser):
    starts_in_reasoning = False


def reasoning_token_count(parser: ThinkTagParser, text: str, token_ids: Sequence[int], tokenizer: Tokenizer) -> int:
    """How many of an output's tokens are reasoning (usage.completion_tokens_details.reasoning_tokens): those up
    to and including the end tag; all of them while reasoning never ended."""
    split = parser.split(text, final=True)
    if not split.ended:
        return len(token_ids) if split.reasoning else 0
    end_ids = tokenizer.encode(parser.end_tag, add_special_tokens=False)
    for position in range(len(token_ids) - len(end_ids) + 1):
        if list(token_ids[position : position + len(end_ids)]) == end_ids:
            return position + len(end_ids)
    # The tag merged with its neighbours into other tokens: count the reasoning text's own tokens.
    reasoning_text = text[: text.find(parser.end_tag) + len(parser.end_tag)]
    return min(len(token_ids), len(tokenizer.encode(reasoning_text, add_special_tokens=False)))
