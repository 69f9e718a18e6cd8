"""Whisper's decoder prompt, built as transformers' generate builds it:

    [<|startofprev|> " " + prompt text ...]  <|startoftranscript|> [<|lang|> <|task|>] [<|notimestamps|>]

Language and task tokens exist only in multilingual checkpoints (generation_config.json's `is_multilingual`;
English-only `*.en` models start with <|startoftranscript|> alone). Without timestamps the prompt ends with
<|notimestamps|>; with them the model emits <|0.00|>-style time tokens itself. The previous-text part keeps
the last max_target_positions // 2 - 1 tokens, as generate does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from kvserve.tokenizer import Tokenizer

Task = Literal["transcribe", "translate"]

_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")
_TIMESTAMP_TOKEN = re.compile(r"<\|(\d+\.\d\d)\|>")


@dataclass(frozen=True, slots=True)
class WhisperPrompts:
    start_of_transcript: int
    start_of_prev: int | None
    no_timestamps: int
    task_ids: dict[str, int]
    language_ids: dict[str, int]  # ISO 639-1 code (e.g. "en") -> its token id
    multilingual: bool
    max_prev_tokens: int
    timestamp_ids: dict[int, float]  # <|t|> token id -> t seconds

    @classmethod
    def of(cls, tokenizer: Tokenizer, hf_config: dict[str, Any], generation_config: dict[str, Any]) -> WhisperPrompts:
        def token_id(token: str) -> int:
            found = tokenizer.backend.token_to_id(token)
            if found is None:
                raise ValueError(f"the tokenizer has no {token} token: not a Whisper tokenizer")
            return found

        added = {token.content: token_id for token_id, token in tokenizer.backend.get_added_tokens_decoder().items()}
        languages = {m.group(1): i for t, i in added.items() if (m := _LANGUAGE_TOKEN.fullmatch(t))}
        timestamps = {i: float(m.group(1)) for t, i in added.items() if (m := _TIMESTAMP_TOKEN.fullmatch(t))}
        return cls(
            start_of_transcript=token_id("<|startoftranscript|>"),
            start_of_prev=tokenizer.backend.token_to_id("<|startofprev|>"),
            no_timestamps=token_id("<|notimestamps|>"),
            task_ids={task: token_id(f"<|{task}|>") for task in ("transcribe", "translate")},
            language_ids=languages,
            multilingual=bool(generation_config.get("is_multilingual", len(languages) > 1)),
            max_prev_tokens=int(hf_config.get("max_target_positions", 448)) // 2 - 1,
            timestamp_ids=timestamps,
        )

    def check_language(self, language: str | None) -> str:
        """The language code to use (English when not given, as vLLM does); ValueError for an unknown one."""
        language = (language or "en").lower()
        if language not in self.language_ids:
            raise ValueError(f"Unsupported language: {language!r}. Supported: {', '.join(sorted(self.language_ids))}")
        return language

    def decoder_prompt(
        self, language: str, task: Task, previous_text_ids: list[int], timestamps: bool = False
    ) -> list[int]:
        prompt: list[int] = []
        if previous_text_ids and self.start_of_prev is not None:
            prompt = [self.start_of_prev, *previous_text_ids[-self.max_prev_tokens :]]
        prompt.append(self.start_of_transcript)
        if self.multilingual:
            prompt += [self.language_ids[language], self.task_ids[task]]
        if not timestamps:
            prompt.append(self.no_timestamps)
        return prompt

    def previous_text_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """The optional text prompt as generate's prompt_ids encode it: a leading space, stripped text."""
        text = text.strip()
        return tokenizer.encode(" " + text, add_special_tokens=False) if text else []
