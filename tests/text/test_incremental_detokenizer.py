"""IncrementalDetokenizer against the tokenizer's own full decode, on tokenizers trained here, offline."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from os.path import commonprefix
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from kvserve.text.incremental_detokenizer import IncrementalDetokenizer

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL = "<tool_call>"  # an added token that is not special

CORPUS_LINES = (
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagt der Bäcker aus Köln.",
    "Le garçon a mangé une crème brûlée au café près de la forêt; c'était très réussi.",
    "¿Dónde está la estación? Mañana vamos a Córdoba y a Málaga con la señora Núñez.",
    "今日はいい天気ですね。東京の桜がとてもきれいです。",
    "你好，世界！我们今天去北京看长城，然后吃烤鸭。",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "Привет, как дела? Сегодня хорошая погода в Москве.",
    "Emoji time: 😀 😃 😄 🎉 🚀 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 and 🦀 for the crab.",
    'def greet(name: str) -> str:\n    return f"Hello, {name}!"  # 👋',
    "Math: ∑ x² ≤ ∞, α + β = γ, 3 × 4 ÷ 2 ≈ 6, and π ≈ 3.14159.",
    "Prices: €42.50, £13, ¥1000, ₹250 — all “quoted” with ‘care’ and … dots.",
    "The naïve coöperative's résumé was reviewed by the façade's owner in Zürich.",
    "Numbers 0123456789 and symbols !@#$%^&*()_+-=[]{}|;:'\",.<>/? in one line.",
)
CORPUS = [line for _ in range(4) for line in CORPUS_LINES]
# Pieces of generated text for the random sequences: words, characters that byte-level BPE and byte
# fallback split over several tokens, and chat markers.
FRAGMENTS = (
    " the",
    " fox",
    " café",
    "Ü",
    " 你好",
    "。",
    "東京",
    " 😀",
    "🎉",
    "👍🏽",
    "🇫🇷",
    "👨‍👩‍👧",
    "🦀",
    "\n",
    "    ",
    " ≈",
    "€",
    " Привет",
    IM_START,
    IM_END,
    TOOL_CALL,
    "<s>",
    "</s>",
)


@functools.cache
def byte_level_bpe() -> Tokenizer:
    """GPT-2 / Qwen style: byte-level BPE, so characters outside the merges take a token per byte."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_tokens([AddedToken(TOOL_CALL, special=False)])
    return tokenizer


@functools.cache
def metaspace_bpe() -> Tokenizer:
    """SentencePiece style: `▁` carries a word's leading space, and decoding drops the first token's."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


@functools.cache
def byte_fallback_bpe() -> Tokenizer:
    """Llama 2 / Mistral style: characters missing from the vocabulary become `<0xNN>` byte tokens, and the
    decoder (Replace, ByteFallback, Fuse, Strip) drops the leading space of the whole text."""
    pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizer
    # Trained on the Latin script only, so that CJK, Cyrillic, emoji and the like fall back to bytes. (The
    # trainer's `limit_alphabet` would do too, but breaks ties between equally rare characters by chance.)
    latin_corpus = ["".join(char for char in line if ord(char) < 0x250) for line in CORPUS]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    trained.train_from_iterator(latin_corpus, trainer)
    model = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    merges = [(left, right) for left, right in model["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tokenizer


@functools.cache
def word_level_without_decoder() -> Tokenizer:
    """A tokenizer without a decoder: decoding joins all tokens, added ones included, with spaces."""
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<x>", "<y>"])
    tokenizer.add_tokens(["<z>"])
    return tokenizer


@functools.cache
def byte_level_with_straddling_token() -> Tokenizer:
    """A token for every byte, and one (bytes 98 D0) that ends one "И" and begins the next, so that "ИИИ..."
    can be spelt without a single token boundary between characters."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: token_id for token_id, char in enumerate(alphabet)}
    vocab["ĺÐ"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def expected_output_text(tokenizer: Tokenizer, prompt: list[int], output: list[int], skip_special_tokens: bool) -> str:
    """The output as the tokenizer decodes it in the context of the prompt: the decode of prompt + output
    past the text it shares with the prompt's decode (which differs where the prompt ends inside a
    character that the output completes)."""
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=skip_special_tokens)
    full_text = tokenizer.decode(prompt + output, skip_special_tokens=skip_special_tokens)
    return full_text[len(commonprefix([prompt_text, full_text])) :]


def check_stream(
    tokenizer: Tokenizer,
    prompt: list[int],
    output: list[int],
    cuts: Sequence[int],
    skip_special_tokens: bool,
    spaces_between_special_tokens: bool = True,
) -> None:
    """Pushes `output` in pieces split at `cuts`: the text returned so far must always be a prefix of the
    expected text (so no half character is ever returned), and all of it with `flush` the whole."""
    expected = expected_output_text(tokenizer, prompt, output, skip_special_tokens)
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens, spaces_between_special_tokens)
    bounds = [0, *sorted(cuts), len(output)]
    for start, end in zip(bounds, bounds[1:]):
        detokenizer.push(output[start:end])
        assert expected.startswith(detokenizer.output_text), (detokenizer.output_text, expected)
    detokenizer.flush()
    assert detokenizer.output_text == expected


def push_one_by_one(detokenizer: IncrementalDetokenizer, token_ids: Sequence[int]) -> list[str]:
    return [detokenizer.push([token_id]) for token_id in token_ids]


def test_emoji_split_over_byte_level_tokens_is_held_until_complete() -> None:
    tokenizer = byte_level_bpe()
    crab_ids = tokenizer.encode("🦀").ids
    assert [tokenizer.id_to_token(token_id) for token_id in crab_ids] == ["ðŁ", "¦", "Ģ"]  # F0 9F, A6, 80
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("A crab:").ids)
    assert push_one_by_one(detokenizer, crab_ids + tokenizer.encode("!").ids) == ["", "", "🦀", "!"]
    assert detokenizer.flush() == ""
    assert detokenizer.output_text == "🦀!"


def test_tokens_straddling_characters_are_not_taken_for_invalid_bytes() -> None:
    # No token boundary falls between two characters, so the text is never complete; still each "И" is
    # returned as soon as it is, and the one in progress is never given out as U+FFFD.
    tokenizer = byte_level_with_straddling_token()
    lead_id, straddling_id, continuation_id = (tokenizer.token_to_id(token) for token in ("Ð", "ĺÐ", "ĺ"))
    token_ids = [lead_id, *[straddling_id] * 39, continuation_id]
    assert tokenizer.decode(token_ids) == "И" * 40
    detokenizer = IncrementalDetokenizer(tokenizer, [])
    assert push_one_by_one(detokenizer, token_ids) == ["", *["И"] * 40]


@pytest.mark.parametrize("make_tokenizer", [byte_level_bpe, metaspace_bpe, byte_fallback_bpe])
def test_corpus_pushed_token_by_token_never_returns_a_replacement_char(make_tokenizer: Callable[[], Tokenizer]) -> None:
    tokenizer = make_tokenizer()
    for line in CORPUS_LINES:
        token_ids = tokenizer.encode(line).ids
        detokenizer = IncrementalDetokenizer(tokenizer, [])
        pieces = push_one_by_one(detokenizer, token_ids)
        assert not any("\ufffd" in piece for piece in pieces)
        assert "".join(pieces) + detokenizer.flush() == tokenizer.decode(token_ids) == line


def test_byte_fallback_emoji_is_held_until_complete() -> None:
    tokenizer = byte_fallback_bpe()
    ids = tokenizer.encode("ß😀").ids  # neither is in the corpus
    byte_tokens = ["<0xC3>", "<0x9F>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert [tokenizer.id_to_token(token_id) for token_id in ids] == ["▁", *byte_tokens]
    # While the emoji is unfinished the decoder turns the whole byte run, ß included, into U+FFFD; the ß
    # already returned stands.
    assert tokenizer.decode(ids[:4]) == "\ufffd" * 3  # (Strip drops the leading space)
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("Voila").ids)
    assert push_one_by_one(detokenizer, ids) == [" ", "", "ß", "", "", "", "😀"]


def test_byte_fallback_invalid_byte_cannot_take_back_returned_text() -> None:
    # An invalid byte makes the decoder rewrite its whole byte run as U+FFFD, "é" included; returned text
    # stays, and the output goes on from where the two versions part (here, the start of the run). Until
    # the next token the trailing U+FFFD may still be an unfinished character, so it is held.
    tokenizer = byte_fallback_bpe()
    ids = [tokenizer.token_to_id(token) for token in ("<0xC3>", "<0xA9>", "<0x80>", "a")]
    assert tokenizer.decode(ids) == "\ufffd" * 3 + "a"
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("Voila").ids)
    assert push_one_by_one(detokenizer, ids) == ["", "é", "", "\ufffd" * 3 + "a"]


@pytest.mark.parametrize("make_tokenizer", [metaspace_bpe, byte_fallback_bpe])
@pytest.mark.parametrize(
    ("prompt_text", "skip_special_tokens", "expected"),
    [
        ("The quick brown fox", True, " jumps"),
        ("", True, "jumps"),  # nothing in front: dropped as in the full decode
        ("<s>", True, "jumps"),  # a skipped token is nothing in front either
        ("<s>", False, " jumps"),
        ("The quick brown fox<s></s><s></s><s></s><s></s>", True, " jumps"),
    ],
)
def test_sentencepiece_first_generated_token_keeps_its_space(
    make_tokenizer: Callable[[], Tokenizer], prompt_text: str, skip_special_tokens: bool, expected: str
) -> None:
    tokenizer = make_tokenizer()
    output = tokenizer.encode("jumps").ids
    # Decoded on its own the first token loses its space, which in the context of the prompt it has.
    assert tokenizer.decode(output) == "jumps"
    prompt = tokenizer.encode(prompt_text).ids
    assert expected_output_text(tokenizer, prompt, output, skip_special_tokens) == expected
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens)
    assert detokenizer.push(output) + detokenizer.flush() == expected


def test_prompt_ending_inside_a_character_returns_the_whole_character() -> None:
    tokenizer = byte_level_bpe()
    ids = tokenizer.encode("A crab: 🦀!").ids
    prompt, output = ids[:-2], ids[-2:]  # the prompt ends with F0 9F, A6
    assert tokenizer.decode(prompt).endswith("\ufffd")
    detokenizer = IncrementalDetokenizer(tokenizer, prompt)
    assert push_one_by_one(detokenizer, output) == ["🦀", "!"]


def test_flush_returns_an_unfinished_character_as_the_tokenizer_decodes_it() -> None:
    tokenizer = byte_level_bpe()
    unfinished_ids = tokenizer.encode("🦀").ids[:-1]
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("A crab:").ids)
    assert detokenizer.push(unfinished_ids) == ""
    assert detokenizer.flush() == "\ufffd" == tokenizer.decode(unfinished_ids)
    assert detokenizer.output_text == "\ufffd"


@pytest.mark.parametrize(("skip_special_tokens", "expected"), [(True, "Hello!"), (False, f"Hello!{IM_END}")])
def test_skip_special_tokens(skip_special_tokens: bool, expected: str) -> None:
    tokenizer = byte_level_bpe()
    prompt = tokenizer.encode(f"{IM_START}user\nHi{IM_END}\n{IM_START}assistant\n").ids
    output = tokenizer.encode(f"Hello!{IM_END}").ids
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens)
    assert "".join(push_one_by_one(detokenizer, output)) + detokenizer.flush() == expected


@pytest.mark.parametrize("one_by_one", [False, True])
@pytest.mark.parametrize(
    ("skip_special_tokens", "spaces_between_special_tokens", "expected"),
    [
        (False, True, " <x> <y> b <z> <z> a"),
        # Only an added token right after another loses the separator; "b" after "<y>" keeps it.
        (False, False, " <x><y> b <z><z> a"),
        (True, True, " b <z> <z> a"),
        # With skip_special_tokens vLLM ignores the flag, non-special added tokens included.
        (True, False, " b <z> <z> a"),
    ],
)
def test_spaces_between_special_tokens_without_a_decoder(
    one_by_one: bool, skip_special_tokens: bool, spaces_between_special_tokens: bool, expected: str
) -> None:
    tokenizer = word_level_without_decoder()
    prompt = tokenizer.encode("a").ids
    output = tokenizer.encode("<x><y> b<z><z> a").ids
    assert tokenizer.decode(prompt + output, skip_special_tokens=False) == "a <x> <y> b <z> <z> a"
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens, spaces_between_special_tokens)
    pieces = push_one_by_one(detokenizer, output) if one_by_one else [detokenizer.push(output)]
    assert "".join(pieces) + detokenizer.flush() == expected


def test_added_token_after_the_prompt_keeps_its_separator() -> None:
    # As in vLLM, only two generated added tokens are joined, not the prompt's last one and the first.
    tokenizer = word_level_without_decoder()
    detokenizer = IncrementalDetokenizer(
        tokenizer, tokenizer.encode("a <x>").ids, skip_special_tokens=False, spaces_between_special_tokens=False
    )
    assert push_one_by_one(detokenizer, tokenizer.encode("<y><z>").ids) == [" <y>", "<z>"]


class RecordingTokenizer:
    """Stands in for a tokenizer, recording how many ids each decode is given."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.decode_lengths: list[int] = []

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        self.decode_lengths.append(len(ids))
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def get_added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self._tokenizer.get_added_tokens_decoder()


@pytest.mark.parametrize("make_tokenizer", [byte_level_bpe, metaspace_bpe, byte_fallback_bpe])
def test_each_push_decodes_a_bounded_window(make_tokenizer: Callable[[], Tokenizer]) -> None:
    tokenizer = make_tokenizer()
    token_ids = tokenizer.encode("\n".join(CORPUS)).ids
    prompt, output = token_ids[:1000], token_ids[1000:3000]
    recorder = RecordingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(cast(Tokenizer, recorder), prompt)
    text = "".join(push_one_by_one(detokenizer, output)) + detokenizer.flush()
    assert text == expected_output_text(tokenizer, prompt, output, skip_special_tokens=True)
    # Only the prompt's last 24 tokens are read; later a window holds at most 16 settled tokens, the few held
    # for an unfinished character and the push. About one decode per push: cuts are rare.
    assert max(recorder.decode_lengths) <= 24
    assert len(recorder.decode_lengths) < 1.2 * len(output)


def test_invalid_bytes_are_not_held_for_long() -> None:
    # Lone continuation bytes never complete a character; holding them until the end would grow the window
    # with the output.
    tokenizer = byte_level_bpe()
    continuation_byte_id = tokenizer.token_to_id("Ģ")  # 0x80
    recorder = RecordingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(cast(Tokenizer, recorder), tokenizer.encode("Bytes:").ids)
    push_one_by_one(detokenizer, [continuation_byte_id] * 300)
    assert detokenizer.output_text == "\ufffd" * 296  # an unfinished character spans at most 4 tokens
    assert detokenizer.flush() == "\ufffd" * 4
    assert max(recorder.decode_lengths) <= 24


def token_sequences(tokenizer: Tokenizer, random_ids: bool) -> st.SearchStrategy[list[int]]:
    """Concatenated encodings of FRAGMENTS, and with `random_ids` arbitrary tokens (invalid UTF-8 among them)."""
    fragment_ids = st.sampled_from([tokenizer.encode(fragment).ids for fragment in FRAGMENTS])
    if random_ids:
        fragment_ids |= st.lists(st.integers(0, tokenizer.get_vocab_size() - 1), min_size=1, max_size=3)
    return st.lists(fragment_ids, max_size=16).map(lambda runs: [token_id for run in runs for token_id in run])


@st.composite
def streams(draw: st.DrawFn, tokenizer: Tokenizer, random_ids: bool) -> tuple[list[int], list[int], list[int]]:
    """A prompt and an output cut anywhere in one token sequence (so the prompt may end inside a
    character), and where the output is split into pushes."""
    token_ids = draw(token_sequences(tokenizer, random_ids))
    num_prompt_ids = draw(st.integers(0, len(token_ids)))
    output = token_ids[num_prompt_ids:]
    cuts = draw(st.lists(st.integers(0, len(output)), max_size=len(output)))
    return token_ids[:num_prompt_ids], output, cuts


STREAM_SETTINGS = settings(max_examples=150, deadline=None)


@STREAM_SETTINGS
@given(data=st.data(), skip_special_tokens=st.booleans(), spaces_between_special_tokens=st.booleans())
def test_byte_level_stream_adds_up_to_the_full_decode(
    data: st.DataObject, skip_special_tokens: bool, spaces_between_special_tokens: bool
) -> None:
    # Byte-level decoding replaces invalid bytes without touching the text before them, so this holds
    # for arbitrary tokens too.
    tokenizer = byte_level_bpe()
    prompt, output, cuts = data.draw(streams(tokenizer, random_ids=True))
    check_stream(tokenizer, prompt, output, cuts, skip_special_tokens, spaces_between_special_tokens)


@STREAM_SETTINGS
@given(data=st.data(), skip_special_tokens=st.booleans(), spaces_between_special_tokens=st.booleans())
def test_metaspace_stream_adds_up_to_the_full_decode(
    data: st.DataObject, skip_special_tokens: bool, spaces_between_special_tokens: bool
) -> None:
    tokenizer = metaspace_bpe()
    prompt, output, cuts = data.draw(streams(tokenizer, random_ids=True))
    check_stream(tokenizer, prompt, output, cuts, skip_special_tokens, spaces_between_special_tokens)


@STREAM_SETTINGS
@given(data=st.data(), skip_special_tokens=st.booleans(), spaces_between_special_tokens=st.booleans())
def test_byte_fallback_stream_adds_up_to_the_full_decode(
    data: st.DataObject, skip_special_tokens: bool, spaces_between_special_tokens: bool
) -> None:
    # Valid text only: an invalid byte rewrites its whole byte run (see the test above).
    tokenizer = byte_fallback_bpe()
    prompt, output, cuts = data.draw(streams(tokenizer, random_ids=False))
    check_stream(tokenizer, prompt, output, cuts, skip_special_tokens, spaces_between_special_tokens)
