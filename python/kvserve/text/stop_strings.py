"""Stop strings: finding them in generated text, and how much text a stream must withhold meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StopMatch:
    stop_string: str  # the stop string that matched, reported as the stop reason
    truncate_to: int  # length of output text to keep


class StopStringChecker:
    """Checks a request's growing output text for its stop strings (vLLM's `stop`).

    The first stop string to complete wins: the one whose match ends earliest, and of two ending at the
    same place the one listed first (as vLLM since #49391; before, the first listed that matched anywhere
    in the window won). The earliest end makes the result independent of how the text is split into pieces
    (several tokens per step with speculative decoding), as if it were checked character by character.
    """

    __slots__ = ("_stop", "_include_stop_str_in_output", "_max_stop_len")

    def __init__(self, stop: Sequence[str], include_stop_str_in_output: bool) -> None:
        if isinstance(stop, str):
            raise TypeError("stop must be a sequence of strings, not a single string")
        if any(not stop_string for stop_string in stop):
            raise ValueError("stop strings must not be empty")
        self._stop = tuple(dict.fromkeys(stop))
        self._include_stop_str_in_output = include_stop_str_in_output
        self._max_stop_len = max(map(len, self._stop), default=0)

    @property
    def hold_back(self) -> int:
        """Characters a stream withholds from the end of the text while not finished.

        Without include_stop_str_in_output that is the longest stop string less one, so a client never sees
        the beginning of a stop string that later matches; with it, nothing (as vLLM): the stop string is
        returned anyway, and text after it arrives in the same step as the match that cuts it off.
        """
        if self._include_stop_str_in_output or not self._max_stop_len:
            return 0
        return self._max_stop_len - 1

    def check(self, output_text: str, num_new_chars: int) -> StopMatch | None:
        """Finds the first stop string that ends within the last `num_new_chars` characters of `output_text`
        (all text generated so far). A match may begin in earlier text, since stop strings cross token
        boundaries. Output is cut before the stop string, or after it with include_stop_str_in_output."""
        if not 0 <= num_new_chars <= len(output_text):
            raise ValueError(f"num_new_chars={num_new_chars} is outside 0..{len(output_text)}")
        if not num_new_chars:
            return None
        num_old_chars = len(output_text) - num_new_chars
        best: tuple[int, str] | None = None  # (end, stop string) of the best match so far
        for stop_string in self._stop:
            # Earlier checks saw every match that ends in old text; only the last len - 1 old characters
            # can begin a new one.
            start = output_text.find(stop_string, max(0, num_old_chars - len(stop_string) + 1))
            if start == -1:
                continue
            end = start + len(stop_string)
            if best is None or end < best[0]:
                best = (end, stop_string)
        if best is None:
            return None
        end, stop_string = best
        return StopMatch(stop_string, end if self._include_stop_str_in_output else end - len(stop_string))
