"""Every message the actors exchange: frozen, slotted dataclasses of plain data (ints, strs, lists, numpy
arrays), so that an actor can move to another process without its messages changing.

Flow:  engine -> Tokenizer -> (Register -> Detokenizer, Add -> Scheduler) ; Scheduler <-> Runner ;
       Scheduler -> Detokenizer (RequestAccepted, TokenDeltas, RequestsAborted, RequestFailed)
       -> the engine's output router.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvserve.errors import ErrorInfo
from kvserve.outputs import RequestOutput
from kvserve.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class TokenizeRequest:
    """engine -> tokenizer: a new request, as text or token ids."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    params: SamplingParams
    arrival_time: float
    priority: int = 0
    cache_salt: str | None = None
    add_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None  # keep this many prompt tokens (-1: as many as fit)
    truncation_side: str = "left"  # left keeps the last tokens, right the first


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """tokenizer -> detokenizer: what the detokenizer needs before the request's first token."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class AddRequest:
    """tokenizer -> scheduler: a validated request ready to schedule."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    eos_token_ids: tuple[int, ...]
    arrival_time: float
    priority: int
    cache_salt: str


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """engine -> tokenizer -> scheduler (keeps it behind the request's AddRequest), or detokenizer ->
    scheduler when a stop string ended the request."""

    request_id: str


@dataclass(frozen=True, slots=True)
class NewRequestData:
    """What the runner keeps per request: its sampling options and prompt."""

    handle: int
    params: SamplingParams
    prompt_token_ids: list[int]
    eos_token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExecuteBatch:
    """scheduler -> runner: one step. Arrays are views of the C++ scheduler output (see _core.pyi)."""

    step: int
    req_handles: np.ndarray  # [R] int64
    input_ids: np.ndarray  # [T] int32
    positions: np.ndarray  # [T] int32
    slot_mapping: np.ndarray  # [T] int64
    block_tables: np.ndarray  # [R, W] int32
    query_start_loc: np.ndarray  # [R + 1] int32
    seq_lens: np.ndarray  # [R] int32
    logits_indices: np.ndarray  # [S] int32
    sample_handles: np.ndarray  # [S] int64
    max_query_len: int
    max_seq_len: int
    new_requests: tuple[NewRequestData, ...]  # added since the previous step
    finished_handles: tuple[int, ...]  # gone since the previous step: drop their state


@dataclass(frozen=True, slots=True)
class SampleLogprobs:
    token_ids: np.ndarray  # [S, 1 + k] int64: the sampled token, then the top-k
    logprobs: np.ndarray  # [S, 1 + k] float32
    ranks: np.ndarray  # [S] int64: rank of the sampled token

    def take(self, rows: np.ndarray) -> SampleLogprobs:
        return SampleLogprobs(self.token_ids[rows], self.logprobs[rows], self.ranks[rows])


@dataclass(frozen=True, slots=True)
class PromptLogprobsChunk:
    """Log-probabilities of consecutive prompt tokens of one request (column 0: the actual token)."""

    handle: int
    first_position: int  # prompt position of the first row (>= 1: the first prompt token has none)
    logprobs: SampleLogprobs


@dataclass(frozen=True, slots=True)
class BatchResult:
    """runner -> scheduler: the sampled tokens of one step."""

    step: int
    sampled_token_ids: np.ndarray  # [S] int32
    logprobs: SampleLogprobs | None
    prompt_logprobs: tuple[PromptLogprobsChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDeltas:
    """scheduler -> detokenizer: the new token of each request that sampled in a step."""

    request_ids: list[str]
    token_ids: np.ndarray  # [N] int32
    finish_reasons: np.ndarray  # [N] int8, kvserve._core.FinishReason
    stop_reasons: np.ndarray  # [N] int32, matched stop token id or -1
    num_cached_tokens: np.ndarray  # [N] int32
    logprobs: SampleLogprobs | None  # rows aligned with request_ids


@dataclass(frozen=True, slots=True)
class PromptLogprobs:
    """scheduler -> detokenizer: prompt log-probabilities computed in a step, in prompt order."""

    request_id: str
    first_position: int
    logprobs: SampleLogprobs


@dataclass(frozen=True, slots=True)
class RequestAccepted:
    """scheduler -> detokenizer: the core took the request; its stream opens with an empty output."""

    request_id: str


@dataclass(frozen=True, slots=True)
class RequestsAborted:
    """scheduler -> detokenizer: requests ended by an abort; each gets a final output."""

    request_ids: list[str]


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """any actor -> detokenizer -> router: the request ends with this error."""

    request_id: str
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class StreamOutputs:
    """detokenizer -> router: outputs to deliver to their request streams."""

    outputs: list[RequestOutput]
