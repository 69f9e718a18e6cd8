"""Type stubs for kvserve's C++ core (csrc/core, bound in csrc/bindings)."""

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

class UnknownRequestError(KeyError): ...
class CoreInvariantError(RuntimeError): ...

class FinishReason(enum.IntEnum):
    NONE = 0
    STOP = 1
    LENGTH = 2
    ABORT = 3

class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2

class SchedulingPolicy(enum.IntEnum):
    FCFS = 0
    PRIORITY = 1

class TaskKind(enum.IntEnum):
    GENERATE = 0
    PREFILL_ONLY = 1  # finishes once its prompt is computed; pooled, never sampled, never chunked
    ENCODER_DECODER = 2  # also runs an encoder of num_encoder_tokens at each admission (cross blocks)

class PrefixCacheStats:
    @property
    def num_requests(self) -> int: ...
    @property
    def num_query_tokens(self) -> int: ...
    @property
    def num_hit_tokens(self) -> int: ...

class BlockPool:
    @property
    def num_blocks(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def num_free_blocks(self) -> int: ...
    @property
    def num_cached_blocks(self) -> int: ...
    @property
    def usage(self) -> float: ...
    @property
    def stats(self) -> PrefixCacheStats: ...
    def ref_count(self, block_id: int) -> int: ...
    def block_hash(self, block_id: int) -> int | None: ...
    def free_block_ids(self) -> list[int]: ...
    def check_invariants(self) -> None: ...

class SchedulerConfig:
    """Plain fields, set by keyword; Scheduler(config) validates them (or call validate())."""

    def __init__(
        self,
        *,
        num_blocks: int = 0,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool = True,
        policy: SchedulingPolicy = SchedulingPolicy.FCFS,
        max_num_encoder_input_tokens: int = 0,
    ) -> None: ...
    def validate(self) -> None: ...
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    policy: SchedulingPolicy
    # Encoder budget per step; 0 means max_num_batched_tokens (Scheduler.config reads the effective value).
    max_num_encoder_input_tokens: int

class RequestParams:
    def __init__(
        self,
        *,
        max_tokens: int = 16,
        min_tokens: int = 0,
        eos_token_ids: Sequence[int] = (),
        stop_token_ids: Sequence[int] = (),
        ignore_eos: bool = False,
        priority: int = 0,
        arrival_time: float = 0.0,
        cache_salt: str = "",
        skip_prefix_cache: bool = False,
        task: TaskKind = TaskKind.GENERATE,
        num_encoder_tokens: int = 0,
        allow_overlap: bool = True,
    ) -> None: ...
    max_tokens: int
    min_tokens: int
    eos_token_ids: list[int]
    stop_token_ids: list[int]
    ignore_eos: bool
    priority: int
    arrival_time: float
    cache_salt: str
    skip_prefix_cache: bool
    task: TaskKind
    num_encoder_tokens: int  # encoder-decoder only (>= 1 there, 0 otherwise)
    allow_overlap: bool  # may be scheduled again while its last token is in flight

class RequestState:
    handle: int
    status: RequestStatus
    num_prompt_tokens: int
    num_computed_tokens: int
    num_output_placeholders: int  # sampled by scheduled steps, not updated yet
    num_cached_tokens: int
    token_ids: list[int]
    block_ids: list[int]
    cross_block_ids: list[int]  # encoder-decoder while running: ceil(num_encoder_tokens / block_size)
    slot: int  # row in the runner's persistent batch, from add_request to finish or abort

class StepStats:
    """One step's counts: deltas, never cumulative (queue sizes and blocks as right after the schedule)."""

    num_running: int
    num_waiting: int
    num_used_blocks: int
    num_free_blocks: int
    num_total_blocks: int
    prefix_cache_queries: int  # tokens
    prefix_cache_hits: int  # tokens
    num_preemptions: int
    num_scheduled_tokens: int
    num_scheduled_reqs: int
    num_encoder_tokens: int

class SchedulerOutput:
    """One step's batch (views, no copies): R requests, T tokens, S sampled rows, P pooled requests,
    E encoder runs, W and Wc block-table widths."""

    num_reqs: int
    num_tokens: int
    max_query_len: int
    max_seq_len: int
    stats: StepStats
    req_handles: npt.NDArray[np.int64]  # [R]
    req_slots: npt.NDArray[np.int32]  # [R]
    input_ids: npt.NDArray[np.int32]  # [T]
    positions: npt.NDArray[np.int32]  # [T]
    slot_mapping: npt.NDArray[np.int64]  # [T]
    block_tables: npt.NDArray[np.int32]  # [R, W], padded with 0
    query_start_loc: npt.NDArray[np.int32]  # [R + 1]
    seq_lens: npt.NDArray[np.int32]  # [R]
    logits_indices: npt.NDArray[np.int32]  # [S]
    sample_handles: npt.NDArray[np.int64]  # [S]
    sample_slots: npt.NDArray[np.int32]  # [S]
    pool_handles: npt.NDArray[np.int64]  # [P] prefill-only requests whose prompt completes this step
    pool_req_indices: npt.NDArray[np.int32]  # [P] rows query_start_loc[i]..query_start_loc[i + 1]
    pool_slots: npt.NDArray[np.int32]  # [P]
    encoder_handles: npt.NDArray[np.int64]  # [E] encoder-decoder requests whose encoder runs this step
    encoder_req_indices: npt.NDArray[np.int32]  # [E]
    cross_block_tables: npt.NDArray[np.int32]  # [R, Wc], padded with 0
    cross_seq_lens: npt.NDArray[np.int32]  # [R] num_encoder_tokens, 0 for other kinds
    cross_slot_mapping: npt.NDArray[np.int64]  # [sum of E encoder lengths], in encoder_handles order
    preempted_handles: npt.NDArray[np.int64]
    placeholder_indices: npt.NDArray[np.int32]  # [X] input_ids positions filled on the device (overlap)
    placeholder_slots: npt.NDArray[np.int32]  # [X] the slot whose last sampled token fills each

class UpdateOutput:
    """One entry per sampled row whose request still exists; pooled requests listed apart."""

    def __len__(self) -> int: ...
    handles: npt.NDArray[np.int64]
    token_ids: npt.NDArray[np.int32]
    finish_reasons: npt.NDArray[np.int8]
    stop_reasons: npt.NDArray[np.int32]
    num_cached_tokens: npt.NDArray[np.int32]
    pooled_handles: npt.NDArray[np.int64]  # prefill-only requests finished by this update, pool order

class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None: ...
    def add_request(
        self, request_id: str, prompt_token_ids: Sequence[int] | npt.NDArray[np.int32], params: RequestParams
    ) -> int: ...
    def abort(self, request_id: str) -> int: ...
    def schedule(self) -> SchedulerOutput: ...
    def update(self, sampled_token_ids: Sequence[int] | npt.NDArray[np.int32]) -> UpdateOutput: ...
    @property
    def config(self) -> SchedulerConfig: ...
    @property
    def block_pool(self) -> BlockPool: ...
    @property
    def num_waiting(self) -> int: ...
    @property
    def num_running(self) -> int: ...
    @property
    def has_unfinished(self) -> bool: ...
    @property
    def has_pending_update(self) -> bool: ...
    @property
    def num_pending_updates(self) -> int: ...  # 2 while a step overlaps the one executing
    @property
    def num_slots(self) -> int: ...
    def request_state(self, request_id: str) -> RequestState: ...
    def reset_prefix_cache(self) -> bool: ...
    def check_invariants(self) -> None: ...
