"""Which incremental detokenizer a request gets: the byte-level fast path where the tokenizer allows it."""

from __future__ import annotations

from collections.abc import Sequence

import tokenizers

from kvserve.text.byte_level_detokenizer import ByteLevelDetokenizer, ByteLevelVocab
from kvserve.text.incremental_detokenizer import IncrementalDetokenizer, added_tokens_to_join


class DetokenizerFactory:
    """Built once per tokenizer (the byte-level tables take ~50 ms for a 50k vocabulary), then one call per
    request. Both kinds return the same pieces for the same tokens where the text is valid UTF-8, and add up
    to the same text always (tests/text/test_byte_level_detokenizer.py)."""

    __slots__ = ("_tokenizer", "_vocab", "_tables")

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._vocab = ByteLevelVocab(tokenizer) if ByteLevelVocab.supports(tokenizer) else None
        self._tables: dict[bool, tuple[list[bytes], list[str | None]]] = {}

    def __call__(
        self,
        prompt_token_ids: Sequence[int],
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
    ) -> ByteLevelDetokenizer | IncrementalDetokenizer:
        joins = added_tokens_to_join(self._tokenizer, skip_special_tokens, spaces_between_special_tokens)
        if self._vocab is None or joins is not None:
            return IncrementalDetokenizer(
                self._tokenizer, prompt_token_ids, skip_special_tokens, spaces_between_special_tokens
            )
        tables = self._tables.get(skip_special_tokens)
        if tables is None:
            tables = self._tables[skip_special_tokens] = self._vocab.tables(skip_special_tokens)
        return ByteLevelDetokenizer(tables, prompt_token_ids)
