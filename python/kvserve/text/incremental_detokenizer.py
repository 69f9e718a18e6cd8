"""Incremental detokenization: a request's generated token ids in, newly completed text out.

Decoding each token on its own is wrong twice over: byte-level BPE and byte-fallback tokens spread one
character over several tokens, and SentencePiece-style decoders (`Metaspace`, `Strip`) drop the leading
space of whatever token comes first in a decode call. So each push decodes a short window that begins with
a few tokens of context (the end of the prompt, later text already returned) and returns the part of the
window's text past what has been accounted for, less a trailing U+FFFD that may be a character in progress:

    window_ids:  | context | pushed, complete text ........ | held: text not known complete ...... |
    window text: | emitted_text (context text, and text returned since) .............. | U+FFFD... |
                 0                                           num_ids - num_held_ids           num_ids

A token boundary where the text is complete (no trailing U+FFFD) settles everything in front of it; once
more than `_MAX_WINDOW_IDS` tokens are settled, the window's front is cut back to a short context. So a push
decodes a bounded number of tokens however long the output grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from os.path import commonprefix

import tokenizers

_REPLACEMENT_CHAR = "\ufffd"
# Tokens kept in front of new ones so that decoders which look at neighbours (the first token's space,
# byte runs) see what they would see in the full sequence; vLLM primes with at least 4 prompt tokens too.
_MIN_CONTEXT_IDS = 4
# How far back into the prompt a clean start for the context is looked for (as far as vLLM looks); the
# rest of the prompt is never read.
_MAX_PROMPT_CONTEXT_IDS = 24
# Once this many window tokens are settled, the window is cut back to a context of at most half as many,
# so that cuts (each a few decodes) come at most every _MAX_WINDOW_IDS // 2 tokens.
_MAX_WINDOW_IDS = 16
# An unfinished character has at most 3 of its 4 UTF-8 bytes, hence lies in the last 3 tokens (4 with a
# skipped special token among them). More held tokens than that means a long push, tokens that straddle
# characters, or invalid bytes; then a settled point is looked for among the last few.
_MAX_HELD_IDS = 4


class IncrementalDetokenizer:
    """Turns one request's generated tokens into text, piece by piece.

    The pieces returned by `push` and then `flush` add up to the tokenizer's decode of the generated tokens
    in the context of the prompt: the decode of prompt + output past the text it shares with the prompt's
    decode (so a SentencePiece first token keeps its space, and a character the prompt left unfinished is
    returned whole once the output completes it). The one exception is a decoder that rewrites text already
    returned (a byte-fallback run that an invalid byte turns wholly into U+FFFD): returned text stays, and
    output resumes where the two versions part.
    """

    __slots__ = (
        "_tokenizer",
        "_skip_special_tokens",
        "_added_token_contents",
        "_last_was_added",
        "_window_ids",
        "_emitted_text",
        "_num_held_ids",
        "_max_held_ids",
        "_output_text",
    )

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        prompt_token_ids: Sequence[int],
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._added_token_contents = added_tokens_to_join(tokenizer, skip_special_tokens, spaces_between_special_tokens)
        # Like vLLM, the prompt's last token does not count: only two generated added tokens are joined.
        self._last_was_added = False
        prompt_tail = list(prompt_token_ids[-_MAX_PROMPT_CONTEXT_IDS:])
        start, context_text = self._find_context(prompt_tail, len(prompt_tail), _MAX_PROMPT_CONTEXT_IDS)
        self._window_ids = prompt_tail[start:]
        # The prompt's text counts as returned. If the prompt ends inside a character, its U+FFFD is not
        # part of the output: once the character completes, the decode parts from it there.
        self._emitted_text = context_text
        self._num_held_ids = 0
        # Held tokens that make it worth looking for a settled point; raised while none is found.
        self._max_held_ids = _MAX_HELD_IDS
        self._output_text = ""

    @property
    def output_text(self) -> str:
        """Everything returned so far."""
        return self._output_text

    def push(self, token_ids: Sequence[int]) -> str:
        """Appends generated tokens; returns the newly completed text.

        Never returns half a character: the bytes of an unfinished UTF-8 sequence (byte-level BPE emits them
        token by token) are held until the character completes.
        """
        if self._added_token_contents is None:
            piece = self._append(token_ids)
        else:
            piece = self._append_joining_added_tokens(token_ids, self._added_token_contents)
        self._output_text += piece
        return piece

    def flush(self) -> str:
        """At finish: whatever is still held, an unfinished character decoded as the tokenizer decodes it
        (U+FFFD), so that all returned pieces add up to the tokenizer's decode of the generated tokens."""
        piece = self._release_held()
        self._output_text += piece
        return piece

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)

    def _append(self, token_ids: Sequence[int]) -> str:
        if not token_ids:
            return ""
        self._window_ids.extend(token_ids)
        self._num_held_ids += len(token_ids)
        return self._take(self._decode(self._window_ids), final=False)

    def _append_joining_added_tokens(self, token_ids: Sequence[int], contents: dict[int, str]) -> str:
        pieces = []
        start = 0
        for index, token_id in enumerate(token_ids):
            content = contents.get(token_id)
            if content is not None and self._last_was_added:
                pieces.append(self._append(token_ids[start:index]))
                pieces.append(self._release_held())
                pieces.append(content)
                # The decoder's own text for the token (with its separator) is what later decodes extend.
                self._window_ids.append(token_id)
                self._emitted_text = self._decode(self._window_ids)
                self._cut_window(len(self._window_ids), self._emitted_text)
                start = index + 1
            self._last_was_added = content is not None
        pieces.append(self._append(token_ids[start:]))
        return "".join(pieces)

    def _release_held(self) -> str:
        if not self._num_held_ids:
            return ""
        return self._take(self._decode(self._window_ids), final=True)

    def _take(self, text: str, final: bool) -> str:
        """Returns the part of `text`, the decode of the whole window, not accounted for yet."""
        emitted = self._emitted_text
        if not final and text.endswith(_REPLACEMENT_CHAR):
            # A decode that disagrees with what was returned while a character is unfinished is a
            # byte-fallback run that the unfinished tail makes invalid as a whole; it settles once the
            # character completes, so nothing is returned until then.
            new = text[len(emitted) :].rstrip(_REPLACEMENT_CHAR) if text.startswith(emitted) else ""
            self._emitted_text = emitted + new
            if self._num_held_ids > self._max_held_ids:
                new += self._settle_held_ids(text)
            return new
        if not text.startswith(emitted):
            # The decoder rewrote text already returned; it cannot be taken back.
            emitted = commonprefix([emitted, text])
        self._emitted_text = text
        self._settle(len(self._window_ids), text)
        return text[len(emitted) :]

    def _settle_held_ids(self, text: str) -> str:
        """Looks among the last held tokens for a point that settles the ones in front of it; returns the
        text this releases. `text` is the decode of the whole window."""
        num_ids = len(self._window_ids)
        for num_tail_ids in range(1, _MAX_HELD_IDS + 1):
            settled_text = self._decode(self._window_ids[: num_ids - num_tail_ids])
            if not settled_text.endswith(_REPLACEMENT_CHAR):
                break
        else:
            # No complete point among the tokens where an unfinished character can lie. If the tokens after
            # them left the U+FFFD in front of them standing, it is invalid bytes and final. If not, those
            # bytes began a character that the next tokens completed: tokens straddle characters here, and
            # a complete point will come; look again only once twice as many tokens are held.
            if not text.startswith(settled_text):
                self._max_held_ids = 2 * self._num_held_ids
                return ""
        released = ""
        if len(settled_text) > len(self._emitted_text) and settled_text.startswith(self._emitted_text):
            released = settled_text[len(self._emitted_text) :]
            self._emitted_text = settled_text
        self._settle(num_ids - num_tail_ids, settled_text)
        return released

    def _settle(self, num_settled_ids: int, settled_text: str) -> None:
        """Marks the first `num_settled_ids` window tokens, which decode to `settled_text`, as settled."""
        self._num_held_ids = len(self._window_ids) - num_settled_ids
        self._max_held_ids = _MAX_HELD_IDS
        self._cut_window(num_settled_ids, settled_text)

    def _cut_window(self, num_settled_ids: int, settled_text: str) -> None:
        """Cuts the window's front back to a short context once the settled tokens are many."""
        if num_settled_ids <= _MAX_WINDOW_IDS or not self._emitted_text.startswith(settled_text):
            return
        start, context_text = self._find_context(self._window_ids, num_settled_ids, _MAX_WINDOW_IDS // 2)
        self._window_ids = self._window_ids[start:]
        self._emitted_text = context_text + self._emitted_text[len(settled_text) :]

    def _find_context(self, token_ids: list[int], end: int, max_length: int) -> tuple[int, str]:
        """Start of the shortest suffix of `token_ids[:end]`, `_MIN_CONTEXT_IDS` to `max_length` long, whose
        text is clean, and that suffix's text.

        Clean is non-empty and free of U+FFFD except at the end: a context that starts inside a character
        or a byte-fallback run would garble the run it shares with new tokens, and one that decodes to
        nothing (skipped special tokens) lets a SentencePiece decoder drop the next token's space. Without
        a clean one (invalid bytes, only skipped tokens), the longest is the likeliest to reach back to
        what the decoder needs.
        """
        longest = min(max_length, end)
        for length in range(min(_MIN_CONTEXT_IDS, end), longest):
            text = self._decode(token_ids[end - length : end])
            stable_text = text.rstrip(_REPLACEMENT_CHAR)
            if stable_text and _REPLACEMENT_CHAR not in stable_text:
                return end - length, text
        return end - longest, self._decode(token_ids[end - longest : end])


def added_tokens_to_join(
    tokenizer: tokenizers.Tokenizer, skip_special_tokens: bool, spaces_between_special_tokens: bool
) -> dict[int, str] | None:
    """Contents of the added tokens to return bare when one follows another, or None to decode as is.

    vLLM, for tokenizers-backed tokenizers: `spaces_between_special_tokens=False` only matters without
    `skip_special_tokens`, and then a generated added token (special or not) right after another
    generated added token is returned as its content, dropping whatever separator the decoder put in
    front of it. Decoders such as ByteLevel and Metaspace put none; a tokenizer without a decoder joins
    all tokens with spaces.
    """
    if skip_special_tokens or spaces_between_special_tokens:
        return None
    contents = {token_id: token.content for token_id, token in tokenizer.get_added_tokens_decoder().items()}
    return contents or None
