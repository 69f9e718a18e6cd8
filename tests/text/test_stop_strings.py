"""StopStringChecker: stop strings found in text that arrives in pieces, and what a stream may show meanwhile."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvserve.text.stop_strings import StopMatch, StopStringChecker


def feed(checker: StopStringChecker, pieces: Sequence[str]) -> tuple[StopMatch | None, str]:
    """Checks text arriving in `pieces` until the first match; returns it and the text that is kept."""
    text = ""
    for piece in pieces:
        text += piece
        match = checker.check(text, len(piece))
        if match is not None:
            return match, text[: match.truncate_to]
    return None, text


def first_to_complete(text: str, stop: Sequence[str]) -> tuple[str, int] | None:
    """The model: the stop string completed first reading `text` one character at a time (the one listed
    first of two completed by the same character), with where it ends."""
    for end in range(1, len(text) + 1):
        for stop_string in stop:
            if text[:end].endswith(stop_string):
                return stop_string, end
    return None


@pytest.mark.parametrize(
    ("include_stop_str_in_output", "expected"),
    [(False, (StopMatch("STOP", 6), "Hello ")), (True, (StopMatch("STOP", 10), "Hello STOP"))],
)
def test_stop_string_spanning_pieces(include_stop_str_in_output: bool, expected: tuple[StopMatch, str]) -> None:
    checker = StopStringChecker(["STOP"], include_stop_str_in_output)
    # The piece that completes it also carries text after it, which is cut either way.
    assert feed(checker, ["Hello S", "T", "OP, then", " more"]) == expected


def test_stop_string_in_the_first_piece() -> None:
    checker = StopStringChecker(["STOP"], include_stop_str_in_output=False)
    assert checker.check("STOP right there", 16) == StopMatch("STOP", 0)


def test_earliest_match_wins_whatever_the_list_order() -> None:
    # vLLM before #49391 took "world", the first listed that matches, keeping "Hello " with "lo" in it.
    checker = StopStringChecker(["world", "lo"], include_stop_str_in_output=False)
    assert checker.check("Hello world", 11) == StopMatch("lo", 3)


def test_first_to_complete_wins_over_first_to_begin() -> None:
    # Read one character at a time, "c" completes before "abcd" does; a piece at a time must agree.
    checker = StopStringChecker(["abcd", "c"], include_stop_str_in_output=True)
    assert checker.check("xabcd", 5) == StopMatch("c", 4)
    assert feed(checker, list("xabcd")) == (StopMatch("c", 4), "xabc")


@pytest.mark.parametrize(
    ("stop", "include_stop_str_in_output", "expected"),
    [
        (["bc", "abc"], False, StopMatch("bc", 2)),
        (["bc", "abc"], True, StopMatch("bc", 4)),
        (["abc", "bc"], False, StopMatch("abc", 1)),
        (["abc", "bc"], True, StopMatch("abc", 4)),
    ],
)
def test_of_two_completed_together_the_first_listed_wins(
    stop: list[str], include_stop_str_in_output: bool, expected: StopMatch
) -> None:
    assert StopStringChecker(stop, include_stop_str_in_output).check("xabcx", 5) == expected


def test_include_stop_str_in_output_cuts_after_the_stop_string() -> None:
    checker = StopStringChecker(["END"], include_stop_str_in_output=True)
    assert checker.check("say END now", 11) == StopMatch("END", 7)
    assert checker.check("say END", 3) == StopMatch("END", 7)


def test_only_matches_ending_in_new_text_are_found() -> None:
    checker = StopStringChecker(["ab"], include_stop_str_in_output=False)
    assert checker.check("xab", 1) == StopMatch("ab", 1)  # begins in earlier text
    assert checker.check("xabx", 1) is None  # an earlier check saw it
    assert checker.check("ab", 0) is None


@pytest.mark.parametrize(
    ("stop", "include_stop_str_in_output", "hold_back"),
    [
        (["STOP", "ab"], False, 3),
        (["STOP", "ab"], True, 0),  # vLLM withholds nothing when the stop string is returned anyway
        (["x"], False, 0),
        ([], False, 0),
    ],
)
def test_hold_back(stop: list[str], include_stop_str_in_output: bool, hold_back: int) -> None:
    assert StopStringChecker(stop, include_stop_str_in_output).hold_back == hold_back


def test_no_stop_strings_never_match() -> None:
    assert StopStringChecker([], include_stop_str_in_output=False).check("anything", 8) is None


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        StopStringChecker(["STOP", ""], include_stop_str_in_output=False)
    with pytest.raises(TypeError, match="not a single string"):
        StopStringChecker("STOP", include_stop_str_in_output=False)
    checker = StopStringChecker(["STOP"], include_stop_str_in_output=False)
    for num_new_chars in (-1, 4):
        with pytest.raises(ValueError, match="num_new_chars"):
            checker.check("abc", num_new_chars)


texts = st.text(alphabet="ab", max_size=24)
stop_lists = st.lists(st.text(alphabet="ab", min_size=1, max_size=4), min_size=1, max_size=3)


@st.composite
def split_texts(draw: st.DrawFn) -> list[str]:
    text = draw(texts)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)))))
    return [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if start < end]


@settings(max_examples=300, deadline=None)
@given(pieces=split_texts(), stop=stop_lists, include_stop_str_in_output=st.booleans())
def test_pieces_find_what_one_character_at_a_time_finds(
    pieces: list[str], stop: list[str], include_stop_str_in_output: bool
) -> None:
    expected = first_to_complete("".join(pieces), stop)
    match, _ = feed(StopStringChecker(stop, include_stop_str_in_output), pieces)
    if expected is None:
        assert match is None
    else:
        stop_string, end = expected
        assert match == StopMatch(stop_string, end if include_stop_str_in_output else end - len(stop_string))


@settings(max_examples=300, deadline=None)
@given(pieces=split_texts(), stop=stop_lists, include_stop_str_in_output=st.booleans())
def test_stream_never_shows_text_that_is_cut_later(
    pieces: list[str], stop: list[str], include_stop_str_in_output: bool
) -> None:
    checker = StopStringChecker(stop, include_stop_str_in_output)
    text = ""
    shown = []
    final_text = None
    for piece in pieces:
        text += piece
        match = checker.check(text, len(piece))
        if match is not None:
            final_text = text[: match.truncate_to]
            break
        shown.append(text[: max(0, len(text) - checker.hold_back)])
    if final_text is None:
        final_text = text
    assert all(final_text.startswith(shown_text) for shown_text in shown)
