"""What AsyncEngine.generate yields: one delta per step (or merged steps) of one request."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    text: str  # new text since the previous output
    token_ids: list[int]  # new token ids since the previous output
    num_prompt_tokens: int
    num_output_tokens: int  # all generated so far
    num_cached_tokens: int
    prompt_token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the matched stop string or stop token id
    logprobs: list[PositionLogprobs] | None = None  # one entry per new token, when asked
    prompt_logprobs: list[PositionLogprobs | None] | None = None  # per prompt token (None for the first)

    def merge(self, later: RequestOutput) -> None:
        """Folds a later delta of the same request into this one."""
        self.text += later.text
        self.token_ids.extend(later.token_ids)
        self.num_output_tokens = later.num_output_tokens
        self.num_cached_tokens = later.num_cached_tokens
        self.finished = later.finished
        self.finish_reason = later.finish_reason
        self.stop_reason = later.stop_reason
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        if later.prompt_logprobs is not None:
            self.prompt_logprobs = (self.prompt_logprobs or []) + later.prompt_logprobs
