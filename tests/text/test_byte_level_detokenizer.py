"""ByteLevelDetokenizer against the tokenizer's whole-sequence decode and against IncrementalDetokenizer (the
general implementation, its oracle): byte-level BPE tokenizers trained here and the embedded SmolLM2's."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, pre_tokenizers

from kvserve.text.byte_level_detokenizer import ByteLevelDetokenizer, ByteLevelVocab, byte_level_alphabet
from kvserve.text.detokenizers import DetokenizerFactory
from kvserve.text.incremental_detokenizer import IncrementalDetokenizer
from tests.text.test_incremental_detokenizer import (
    IM_END,
    IM_START,
    STREAM_SETTINGS,
    byte_level_bpe,
    byte_level_with_straddling_token,
    expected_output_text,
    metaspace_bpe,
    streams,
)

SPACED = "<tool call>"  # an added token with a character outside the byte-level alphabet


@functools.cache
def byte_level_with_spaced_token() -> Tokenizer:
    tokenizer = Tokenizer.from_str(byte_level_bpe().to_str())
    tokenizer.add_tokens([AddedToken(SPACED, special=False)])
    tokenizer.add_special_tokens(["<|ü special|>"])
    return tokenizer


@functools.cache
def smollm2() -> Tokenizer:
    from kvserve.cli import embedded_model_path
    from kvserve.model.loader import resolve_model_dir
    from kvserve.tokenizer import Tokenizer as KvTokenizer

    return KvTokenizer.from_directory(resolve_model_dir(str(embedded_model_path()))).backend


TOKENIZERS = [byte_level_bpe, byte_level_with_straddling_token, byte_level_with_spaced_token, smollm2]


def test_alphabet_is_the_byte_level_pre_tokenizers() -> None:
    alphabet = byte_level_alphabet()
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(alphabet.values()) == list(range(256))


@pytest.mark.parametrize("make_tokenizer", TOKENIZERS)
def test_every_tokens_bytes_decode_as_the_tokenizer_decodes_it(make_tokenizer) -> None:
    tokenizer = make_tokenizer()
    assert ByteLevelVocab.supports(tokenizer)
    vocab = ByteLevelVocab(tokenizer)
    for token_id, data in enumerate(vocab.token_bytes):
        assert data.decode("utf-8", "replace") == tokenizer.decode([token_id], skip_special_tokens=False), token_id
        text = vocab.token_texts[token_id]
        assert text is None or text.encode() == data


def test_only_byte_level_decoders_take_the_fast_path() -> None:
    assert not ByteLevelVocab.supports(metaspace_bpe())
    factory = DetokenizerFactory(byte_level_bpe())
    assert isinstance(factory([1, 2]), ByteLevelDetokenizer)
    assert isinstance(factory([1, 2], skip_special_tokens=False), ByteLevelDetokenizer)
    # Bare added tokens (spaces_between_special_tokens=False, special tokens shown) keep the general path.
    assert isinstance(factory([1], False, False), IncrementalDetokenizer)
    assert isinstance(DetokenizerFactory(metaspace_bpe())([1]), IncrementalDetokenizer)


def run_both(
    tokenizer: Tokenizer, prompt: list[int], output: list[int], cuts: Sequence[int], skip_special_tokens: bool
) -> tuple[list[str], list[str], str]:
    """Pushes `output` split at `cuts` through both detokenizers; returns each one's pieces (flush last) and
    the expected text. The fast one's text so far is always a prefix of the expected text."""
    expected = expected_output_text(tokenizer, prompt, output, skip_special_tokens)
    fast = DetokenizerFactory(tokenizer)(prompt, skip_special_tokens)
    assert isinstance(fast, ByteLevelDetokenizer)
    oracle = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens)
    bounds = [0, *sorted(cuts), len(output)]
    fast_pieces, oracle_pieces = [], []
    for start, end in zip(bounds, bounds[1:]):
        fast_pieces.append(fast.push(output[start:end]))
        oracle_pieces.append(oracle.push(output[start:end]))
        assert expected.startswith(fast.output_text), (fast.output_text, expected)
    fast_pieces.append(fast.flush())
    oracle_pieces.append(oracle.flush())
    assert fast.output_text == "".join(fast_pieces)
    return fast_pieces, oracle_pieces, expected


@STREAM_SETTINGS
@given(data=st.data(), skip_special_tokens=st.booleans(), random_ids=st.booleans())
def test_stream_adds_up_to_the_full_decode_and_matches_the_oracle(
    data: st.DataObject, skip_special_tokens: bool, random_ids: bool
) -> None:
    tokenizer = byte_level_with_spaced_token()
    prompt, output, cuts = data.draw(streams(tokenizer, random_ids=random_ids))
    fast, oracle, expected = run_both(tokenizer, prompt, output, cuts, skip_special_tokens)
    assert "".join(fast) == "".join(oracle) == expected
    if "\ufffd" not in tokenizer.decode(prompt + output, skip_special_tokens=skip_special_tokens):
        # Valid text: after each push the fast one has returned every complete character, so at least
        # what the oracle (which may hold a little longer) has returned.
        for num_pushes in range(1, len(fast) + 1):
            assert "".join(fast[:num_pushes]).startswith("".join(oracle[:num_pushes]))


@STREAM_SETTINGS
@given(data=st.data(), skip_special_tokens=st.booleans())
def test_embedded_tokenizer_stream_with_chat_markers(data: st.DataObject, skip_special_tokens: bool) -> None:
    tokenizer = smollm2()
    prompt, output, cuts = data.draw(streams(tokenizer, random_ids=True))
    fast, oracle, expected = run_both(tokenizer, prompt, output, cuts, skip_special_tokens)
    assert "".join(fast) == "".join(oracle) == expected


def test_prompt_ending_inside_a_character() -> None:
    tokenizer = byte_level_bpe()
    ids = tokenizer.encode("A crab: 🦀!").ids
    prompt = ids[:-2]  # ends with F0 9F, A6
    factory = DetokenizerFactory(tokenizer)
    completed = factory(prompt)
    assert [completed.push([t]) for t in ids[-2:]] == ["🦀", "!"]
    # Broken by the output instead: the prompt's U+FFFD is not returned again, as in the full decode.
    broken = factory(prompt)
    assert (
        broken.push(tokenizer.encode("ok").ids)
        == "ok"
        == expected_output_text(tokenizer, prompt, tokenizer.encode("ok").ids, True)
    )
    unfinished = factory(prompt)
    assert unfinished.push([]) == "" and unfinished.flush() == ""


@pytest.mark.parametrize(("skip_special_tokens", "expected"), [(True, "Hello!"), (False, f"Hello!{IM_END}")])
def test_skip_special_tokens(skip_special_tokens: bool, expected: str) -> None:
    tokenizer = byte_level_bpe()
    prompt = tokenizer.encode(f"{IM_START}user\nHi{IM_END}\n{IM_START}assistant\n").ids
    detokenizer = DetokenizerFactory(tokenizer)(prompt, skip_special_tokens)
    output = tokenizer.encode(f"Hello!{IM_END}").ids
    assert "".join(detokenizer.push([t]) for t in output) + detokenizer.flush() == expected


def test_invalid_bytes_are_returned_at_once_and_never_held() -> None:
    tokenizer = byte_level_bpe()
    continuation_byte_id = tokenizer.token_to_id("Ģ")  # 0x80
    detokenizer = DetokenizerFactory(tokenizer)(tokenizer.encode("Bytes:").ids)
    assert [detokenizer.push([continuation_byte_id]) for _ in range(300)] == ["\ufffd"] * 300
    assert detokenizer.flush() == ""
