"""The engine request: built once, in one place, from any API's input, and carried end to end.

Every later message refers to it (`PreparedRequest.request`) instead of re-listing its fields. Its task
kind decides how the core schedules it and what its output rows are:

    GENERATE         prompt -> sampled tokens (one row per step)                  sampling
    PREFILL_ONLY     prompt -> one pooled row once the prompt is computed         pooling
                     (a prompt may be a TextPair: cross-encoders read query and document as one sequence)
    ENCODER_DECODER  encoder input + decoder prompt -> sampled tokens (Whisper)   sampling + encoder_input
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kvserve.sampling_params import SamplingParams


class TaskKind(enum.IntEnum):
    """Mirrors the core's `_core.TaskKind` value for value."""

    GENERATE = 0
    PREFILL_ONLY = 1
    ENCODER_DECODER = 2


PoolingType = Literal["last", "mean", "cls", "all"]


@dataclass(frozen=True, slots=True)
class PoolingParams:
    """What a prefill-only request's output row is.

    kind "embed": the prompt's final hidden states pooled by `pooling` (None: the model's own default),
    optionally L2-normalised and cut to `dimensions`. kind "next_token": the log-probabilities of the token
    that would follow the prompt, over `token_ids` only when given (generative scoring's label tokens).
    kind "classify": the model's classification head over its pooled state: class probabilities (softmax,
    or sigmoid for a single label, as vLLM's default activation), or the raw logits when `activation` is off.
    """

    kind: Literal["embed", "next_token", "classify"] = "embed"
    pooling: PoolingType | None = None
    normalize: bool = True
    dimensions: int | None = None
    token_ids: tuple[int, ...] | None = None
    activation: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("embed", "next_token", "classify"):
            raise ValueError(f"pooling kind must be 'embed', 'next_token' or 'classify', got {self.kind!r}.")
        if self.pooling not in (None, "last", "mean", "cls", "all"):
            raise ValueError(f"pooling must be one of last, mean, cls, all, got {self.pooling!r}.")
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {self.dimensions}.")
        if self.token_ids is not None and not self.token_ids:
            raise ValueError("token_ids must not be empty when given.")

    @property
    def needs_every_position(self) -> bool:
        """Pooling over all prompt positions needs each one computed, so no cached prefix may be read."""
        return self.kind == "classify" or (self.kind == "embed" and self.pooling in ("mean", "cls", "all"))


@dataclass(frozen=True, slots=True)
class TextPair:
    """Two texts encoded as one sequence, the second with token type 1 (a cross-encoder's query and document)."""

    first: str
    second: str


@dataclass(frozen=True, slots=True)
class EncoderInput:
    """The encoder side of an encoder-decoder request: its input features (e.g. log-mel frames) and the
    number of encoder output positions the decoder cross-attends to."""

    features: np.ndarray
    num_encoder_tokens: int

    def __post_init__(self) -> None:
        if self.num_encoder_tokens < 1:
            raise ValueError(f"num_encoder_tokens must be at least 1, got {self.num_encoder_tokens}.")


@dataclass(frozen=True, slots=True)
class Truncation:
    """Keep `keep` prompt tokens (-1: as many as fit the context); `left` keeps the last ones."""

    keep: int
    side: Literal["left", "right"] = "left"

    def __post_init__(self) -> None:
        if self.keep < -1:
            raise ValueError(f"truncate_prompt_tokens must be -1 or non-negative, got {self.keep}.")
        if self.side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {self.side!r}.")


@dataclass(frozen=True, slots=True)
class SampleGroup:
    """The n samples of one prompt that one API request asked for (OpenAI's `n`): their engine requests share
    this, so metrics can count them once, as vLLM counts a parent request."""

    group_id: str
    n: int


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt: str | list[int] | TextPair  # text, token ids (an encoder-decoder's decoder prompt), or a text pair
    sampling: SamplingParams | None = None  # generate and encoder-decoder requests
    pooling: PoolingParams | None = None  # prefill-only requests
    encoder_input: EncoderInput | None = None  # encoder-decoder requests
    priority: int = 0  # lower runs first under --scheduling-policy priority
    cache_salt: str | None = None  # requests share cached prefixes only with the same salt
    add_special_tokens: bool = True
    truncation: Truncation | None = None
    arrival_time: float = field(default_factory=time.monotonic)  # engine timestamps are all monotonic
    timeout: float | None = None  # seconds from arrival to the end (None: the engine's --request-timeout)
    samples: SampleGroup | None = None  # one of n > 1 samples of its prompt (None: a request of its own)

    def __post_init__(self) -> None:
        if (self.sampling is None) == (self.pooling is None):
            raise ValueError("a request has either sampling or pooling parameters, not both or neither.")
        if self.encoder_input is not None and self.sampling is None:
            raise ValueError("an encoder-decoder request needs sampling parameters.")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout}.")

    @property
    def task(self) -> TaskKind:
        if self.pooling is not None:
            return TaskKind.PREFILL_ONLY
        if self.encoder_input is not None:
            return TaskKind.ENCODER_DECODER
        return TaskKind.GENERATE


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A validated, tokenized request: what the scheduler admits, the runner keeps and the detokenizer
    renders."""

    request: EngineRequest
    prompt_token_ids: list[int]
    max_tokens: int  # resolved against the context length; 0 for prefill-only requests
    eos_token_ids: tuple[int, ...]
    token_type_ids: list[int] | None = None  # a TextPair prompt's segment ids (None: all 0)

    @property
    def request_id(self) -> str:
        return self.request.request_id
