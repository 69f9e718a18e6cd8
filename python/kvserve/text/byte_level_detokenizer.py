"""Incremental detokenization for byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM): one table lookup a
token, and Python's incremental UTF-8 decoder only while a character is split across tokens.

A `ByteLevel` decoder turns each token into bytes (every character of the token through GPT-2's
byte-to-unicode alphabet, or the token's own UTF-8 when a character lies outside it, as added tokens with a
space do) and decodes their concatenation as UTF-8, each maximal invalid subsequence replaced by one U+FFFD
(Rust's `from_utf8_lossy`). Python's UTF-8 decoder with `errors="replace"` replaces the same subsequences, and
its incremental form holds an unfinished character until its last byte comes. So the decode of prompt +
output is the incremental decode of the tokens' bytes in order, and a stream needs no window of tokens:

    token id -> text          when nothing is held and the token's bytes are whole characters (most tokens)
    token id -> bytes -> incremental UTF-8 decoder      otherwise

The pieces add up to the tokenizer's decode of prompt + output past what it shares with the prompt's decode,
as `IncrementalDetokenizer` (the general implementation, and the oracle of this one in the tests) promises.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

import tokenizers
from tokenizers import decoders

_REPLACEMENT_CHAR = "\ufffd"
# The prompt's bytes fed to the decoder at the start: enough to hold an unfinished character (3 bytes).
_PROMPT_TAIL_BYTES = 4
_OUTSIDE = 0xFFFF  # a translation target outside Latin-1


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the character that stands for each byte -> the byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes take the characters from U+0100 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    for offset, byte in enumerate(b for b in range(256) if b not in chars):
        chars[byte] = chr(256 + offset)
    return {char: byte for byte, char in chars.items()}


class ByteLevelVocab:
    """A byte-level tokenizer's token ids as bytes, and as text where the bytes are whole characters."""

    __slots__ = ("token_bytes", "token_texts", "skipped_ids")

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        # One str.translate a token: alphabet characters to the Latin-1 character of their byte, every other
        # character below U+0100 to one that Latin-1 cannot encode, so that a token with a character outside
        # the alphabet falls back to its own UTF-8, as the decoder does.
        table = {code: _OUTSIDE for code in range(256)}
        table.update({ord(char): byte for char, byte in byte_level_alphabet().items()})
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        token_bytes: list[bytes] = [b""] * vocab_size
        for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
            try:
                token_bytes[token_id] = token.translate(table).encode("latin-1")
            except UnicodeEncodeError:
                token_bytes[token_id] = token.encode()
        self.token_bytes = token_bytes
        self.token_texts = [_whole_text(data) for data in token_bytes]
        self.skipped_ids = frozenset(
            token_id for token_id, token in tokenizer.get_added_tokens_decoder().items() if token.special
        )

    @staticmethod
    def supports(tokenizer: tokenizers.Tokenizer) -> bool:
        """Whether decoding is the ByteLevel decoder alone (added tokens pass through it too)."""
        return isinstance(tokenizer.decoder, decoders.ByteLevel)

    def tables(self, skip_special_tokens: bool) -> tuple[list[bytes], list[str | None]]:
        if not skip_special_tokens or not self.skipped_ids:
            return self.token_bytes, self.token_texts
        token_bytes, token_texts = list(self.token_bytes), list(self.token_texts)
        for token_id in self.skipped_ids:
            token_bytes[token_id], token_texts[token_id] = b"", ""
        return token_bytes, token_texts


def _whole_text(data: bytes) -> str | None:
    """The text of `data` when it is complete, valid UTF-8 (then no neighbour can change it), else None."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


class ByteLevelDetokenizer:
    """One request's generated tokens to text, for a tokenizer that `ByteLevelVocab.supports`; the same
    interface as `IncrementalDetokenizer`."""

    __slots__ = ("_token_bytes", "_token_texts", "_utf8", "_holding", "_prompt_unfinished", "_pieces")

    def __init__(self, tables: tuple[list[bytes], list[str | None]], prompt_token_ids: Sequence[int]) -> None:
        self._token_bytes, self._token_texts = tables
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        # The prompt's last bytes, so that a character it leaves unfinished is completed by the output.
        tail = b""
        for token_id in reversed(prompt_token_ids):
            tail = self._token_bytes[token_id] + tail
            if len(tail) >= _PROMPT_TAIL_BYTES:
                break
        self._utf8.decode(tail)
        self._holding = bool(self._utf8.getstate()[0])
        # The prompt's decode ends in U+FFFD for that character; the output's text begins past it, so the
        # first U+FFFD the output decodes to (the character broken, or the real U+FFFD) is the prompt's.
        self._prompt_unfinished = self._holding
        self._pieces: list[str] = []

    @property
    def output_text(self) -> str:
        """Everything returned so far."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def push(self, token_ids: Sequence[int]) -> str:
        """Appends generated tokens; returns the newly completed text (never half a character)."""
        if not self._holding and len(token_ids) == 1:
            text = self._token_texts[token_ids[0]]
            if text is not None:
                if text:
                    self._pieces.append(text)
                return text
        token_bytes = self._token_bytes
        return self._decode(b"".join([token_bytes[token_id] for token_id in token_ids]), final=False)

    def flush(self) -> str:
        """At finish: an unfinished character as the tokenizer decodes it (U+FFFD)."""
        return self._decode(b"", final=True) if self._holding else ""

    def _decode(self, data: bytes, final: bool) -> str:
        text = self._utf8.decode(data, final)
        self._holding = bool(self._utf8.getstate()[0])
        if text and self._prompt_unfinished:
            self._prompt_unfinished = False
            if text.startswith(_REPLACEMENT_CHAR):
                text = text[1:]
        if text:
            self._pieces.append(text)
        return text
