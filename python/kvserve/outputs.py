"""What AsyncEngine.generate yields: one delta per step (or merged steps) of one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    rank: int
    decoded_token: str


@dataclass(frozen=True, slots=True)
class PositionLogprobs:
    """Log-probabilities at one generated position: the sampled token, then the top-k candidates."""

    sampled: TokenLogprob
    top: tuple[TokenLogprob, ...]


class RequestTimes(NamedTuple):
    """A request's timestamps (time.monotonic()); a stage not reached yet is None.

    A named tuple, not a frozen dataclass: the detokenizer makes one per request and token, and a frozen
    dataclass's __init__ (object.__setattr__ per field) costs four times as much.
    """

    arrival: float
    first_scheduled: float | None = None
    first_token: float | None = None  # first output row (a token, or a pooled row)
    latest_token: float | None = None

    @property
    def queue_time(self) -> float | None:
        return None if self.first_scheduled is None else self.first_scheduled - self.arrival

    @property
    def prefill_time(self) -> float | None:
        if self.first_token is None or self.first_scheduled is None:
            return None
        return self.first_token - self.first_scheduled

    @property
    def decode_time(self) -> float | None:
        if self.latest_token is None or self.first_token is None:
            return None
        return self.latest_token - self.first_token

    @property
    def e2e_time(self) -> float | None:
        return None if self.latest_token is None else self.latest_token - self.arrival


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    text: str  # new text since the previous output
    token_ids: list[int]  # new token ids since the previous output
    num_prompt_tokens: int
    num_output_tokens: int  # all generated so far
    num_cached_tokens: int
    prompt_token_ids: list[int]
    times: RequestTimes
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the matched stop string or stop token id
    logprobs: list[PositionLogprobs] | None = None  # one entry per new token, when asked
    prompt_logprobs: list[PositionLogprobs | None] | None = None  # per prompt token (None for the first)
    pooled: np.ndarray | None = None  # a prefill-only request's output row, on its final output

    def merge(self, later: RequestOutput) -> None:
        """Folds a later delta of the same request into this one."""
        self.text += later.text
        self.token_ids.extend(later.token_ids)
        self.num_output_tokens = later.num_output_tokens
        self.num_cached_tokens = later.num_cached_tokens
        self.times = later.times
        self.finished = later.finished
        self.finish_reason = later.finish_reason
        self.stop_reason = later.stop_reason
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        if later.prompt_logprobs is not None:
            self.prompt_logprobs = (self.prompt_logprobs or []) + later.prompt_logprobs
        if later.pooled is not None:
            self.pooled = later.pooled
