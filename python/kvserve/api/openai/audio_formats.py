"""Transcripts as segments, and segments as SubRip (srt) and WebVTT (vtt) text.

Whisper marks segments with time tokens: <|t|> ids start at <|notimestamps|> + 1 and step by 0.02 s, counted
from the start of the 30 s chunk. Text between an opening and a closing time token is one segment; text
with no closing token runs to the end of the chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

TIME_PRECISION = 0.02


@dataclass(frozen=True, slots=True)
class TimedText:
    start: float
    end: float
    token_ids: list[int]
    text: str

    @property
    def compression_ratio(self) -> float:
        """Whisper's repetition measure: text bytes over their zlib-compressed size."""
        data = self.text.encode()
        return len(data) / len(zlib.compress(data)) if data else 0.0


def timed_segments(
    token_ids: list[int],
    chunk_start: float,
    chunk_end: float,
    timestamp_begin: int,
    special_ids: frozenset[int],
    decode: Callable[[list[int]], str],
) -> list[TimedText]:
    """The segments of one chunk's output tokens, in seconds from the start of the audio."""
    segments: list[TimedText] = []
    opened: float | None = None
    text_ids: list[int] = []

    def close(end: float) -> None:
        # Times past the chunk's audio (the padding) are clamped to its end; a segment never ends before it starts.
        start = min(chunk_start + (opened or 0.0), chunk_end)
        segments.append(TimedText(start, min(max(end, start), chunk_end), text_ids.copy(), decode(text_ids)))
        text_ids.clear()

    for token_id in token_ids:
        if token_id >= timestamp_begin:
            time = (token_id - timestamp_begin) * TIME_PRECISION
            if opened is not None and text_ids:
                close(chunk_start + time)
            opened = time  # a closing time also opens the next segment (a repeated one says so again)
        elif token_id not in special_ids:
            text_ids.append(token_id)
    if text_ids:
        close(chunk_end)
    return segments


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_srt(segments: list[TimedText]) -> str:
    return "".join(
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
        for i, s in enumerate(segments, start=1)
    )


def to_vtt(segments: list[TimedText]) -> str:
    cues = "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments)
    return "WEBVTT\n\n" + cues
