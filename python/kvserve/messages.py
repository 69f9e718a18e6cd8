"""Every message the actors exchange: frozen, slotted dataclasses of plain data (ints, strs, lists, numpy
arrays), so that an actor can move to another process without its messages changing.

Flow:  engine -EngineRequest-> Tokenizer -PreparedRequest-> Detokenizer (register) and Scheduler (add) ;
       Scheduler <-ExecuteBatch/BatchResult-> Runner ;
       Scheduler -> Detokenizer (RequestAccepted, RequestsScheduled, TokenDeltas, PooledOutputs,
       PromptLogprobs, RequestsAborted, RequestFailed) -> the engine's output router ;
       Scheduler -StepStats-> output router (the engine's stats listeners) ;
       Scheduler -RequestsScheduled-> output router (the end of queueing, for admission control) ;
       engine -RunnerCall-> Runner (or -PauseForSleep-> Scheduler -RunnerCall-> Runner) -RunnerReply-> router.

A request is described once, by `kvserve.request.EngineRequest`; later messages refer to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvserve.errors import ErrorInfo
from kvserve.outputs import RequestOutput
from kvserve.request import PreparedRequest


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """engine -> tokenizer -> scheduler (keeps it behind the request's PreparedRequest), or detokenizer ->
    scheduler when a stop string ended the request."""

    request_id: str


@dataclass(frozen=True, slots=True)
class NewRequest:
    """scheduler -> runner: a request the core admitted, with its core handle and persistent-batch slot."""

    handle: int
    slot: int
    prepared: PreparedRequest


@dataclass(frozen=True, slots=True)
class ExecuteBatch:
    """scheduler -> runner: one step. Arrays are views of the C++ scheduler output (see _core.pyi).

    R scheduled requests, T tokens, S sampled rows, P pooled requests, E encoder runs, X placeholders.
    With async scheduling the batch may be sent while the previous one executes: the X placeholder tokens
    (input_ids -1) are the ones that step samples, and the runner fills them in on the device.
    """

    step: int
    req_handles: np.ndarray  # [R] int64
    req_slots: np.ndarray  # [R] int32
    input_ids: np.ndarray  # [T] int32
    positions: np.ndarray  # [T] int32
    slot_mapping: np.ndarray  # [T] int64
    block_tables: np.ndarray  # [R, W] int32
    query_start_loc: np.ndarray  # [R + 1] int32
    seq_lens: np.ndarray  # [R] int32
    logits_indices: np.ndarray  # [S] int32
    sample_handles: np.ndarray  # [S] int64
    sample_slots: np.ndarray  # [S] int32
    pool_handles: np.ndarray  # [P] int64: prefill-only requests whose prompt completes in this step
    pool_req_indices: np.ndarray  # [P] int32: their index in req_handles
    pool_slots: np.ndarray  # [P] int32
    encoder_handles: np.ndarray  # [E] int64: encoder-decoder requests whose encoder runs in this step
    encoder_req_indices: np.ndarray  # [E] int32
    cross_block_tables: np.ndarray  # [R, Wc] int32: cross-attention blocks (Wc = 0 without such requests)
    cross_seq_lens: np.ndarray  # [R] int32: encoder output length (0 for other kinds)
    cross_slot_mapping: np.ndarray  # [sum of the E encoder lengths] int64
    max_query_len: int
    max_seq_len: int
    new_requests: tuple[NewRequest, ...]  # admitted since the previous step
    finished_slots: tuple[int, ...]  # requests gone since the previous step: drop their state first
    placeholder_indices: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # [X] into input_ids
    placeholder_slots: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # [X] whose last token


@dataclass(frozen=True, slots=True)
class SampleLogprobs:
    token_ids: np.ndarray  # [S, 1 + k] int64: the sampled (or actual) token, then the top-k
    logprobs: np.ndarray  # [S, 1 + k] float32
    ranks: np.ndarray  # [S] int64: rank of the token of column 0

    def take(self, rows: np.ndarray) -> SampleLogprobs:
        return SampleLogprobs(self.token_ids[rows], self.logprobs[rows], self.ranks[rows])


@dataclass(frozen=True, slots=True)
class PromptLogprobsChunk:
    """Log-probabilities of consecutive prompt tokens of one request (column 0: the actual token)."""

    handle: int
    first_position: int  # prompt position of the first row (>= 1: the first prompt token has none)
    logprobs: SampleLogprobs


@dataclass(frozen=True, slots=True)
class PooledRows:
    """The output rows of the step's prefill-only requests, in ExecuteBatch.pool_handles order."""

    handles: np.ndarray  # [P] int64
    values: tuple[np.ndarray, ...]  # per request: [D] (embed), [n, D] (embed, pooling "all"), [V or k] (next_token)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """runner -> scheduler: the output rows of one step, by kind."""

    step: int
    sampled_token_ids: np.ndarray  # [S] int32
    logprobs: SampleLogprobs | None
    prompt_logprobs: tuple[PromptLogprobsChunk, ...] = ()
    pooled: PooledRows | None = None


@dataclass(frozen=True, slots=True)
class TokenDeltas:
    """scheduler -> detokenizer: the new token of each request that sampled in a step."""

    request_ids: list[str]
    token_ids: np.ndarray  # [N] int32
    finish_reasons: np.ndarray  # [N] int8, kvserve._core.FinishReason
    stop_reasons: np.ndarray  # [N] int32, matched stop token id or -1
    num_cached_tokens: np.ndarray  # [N] int32
    logprobs: SampleLogprobs | None  # rows aligned with request_ids
    time: float  # monotonic: when the step's result reached the scheduler


@dataclass(frozen=True, slots=True)
class PooledOutputs:
    """scheduler -> detokenizer: prefill-only requests finished in a step, with their output rows."""

    request_ids: list[str]
    values: tuple[np.ndarray, ...]
    time: float


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
class RequestsScheduled:
    """scheduler -> detokenizer: requests that got their first step (the end of their queueing time)."""

    request_ids: list[str]
    time: float


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


@dataclass(frozen=True, slots=True)
class StepStats:
    """scheduler -> router: what one executed step did. Gauges are read after the step's result was applied
    (finished requests gone); counts are this step's alone (a consumer sums them), so nothing needs to scan
    engine state."""

    step: int
    time: float  # monotonic, when the step's result was applied
    num_running: int
    num_waiting: int
    num_used_blocks: int
    num_free_blocks: int
    num_total_blocks: int
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found there
    num_preemptions: int
    num_scheduled_tokens: int
    num_scheduled_reqs: int
    num_encoder_tokens: int
    num_generated_tokens: int  # tokens sampled and kept in this step
    # Requests the core finished in this step (EOS, stop ids, length, pooled). Stop strings end requests in
    # the detokenizer: their final outputs carry the reason, and the core sees them as aborts.
    num_finished: int
    num_pooled: int  # prefill-only requests that produced their output row

    @property
    def kv_cache_usage(self) -> float:
        return self.num_used_blocks / self.num_total_blocks if self.num_total_blocks else 0.0


@dataclass(frozen=True, slots=True)
class RunnerCall:
    """engine -> runner: call a method of the model runner on its thread, between steps (sleep, wake up,
    collective RPC). The runner answers with a RunnerReply of the same call_id to the router."""

    call_id: int
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    collective_rpc: bool = False  # from the collective RPC route: only methods the scheduler does not drive


@dataclass(frozen=True, slots=True)
class RunnerReply:
    """runner -> router: what a RunnerCall returned, or the error it raised."""

    call_id: int
    result: Any = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class PauseForSleep:
    """engine -> scheduler: fail every request held (503), start no step until Resume, then pass `call`
    (the runner's sleep) on, behind any step in flight."""

    call: RunnerCall


@dataclass(frozen=True, slots=True)
class Resume:
    """engine -> scheduler: the runner is awake again; the prefix cache (whose KV is gone) is dropped."""
