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
    def __init__(
        self,
        *,
        num_blocks: int,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool = True,
        policy: SchedulingPolicy = SchedulingPolicy.FCFS,
    ) -> None: ...
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    policy: SchedulingPolicy

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

class RequestState:
    handle: int
    status: RequestStatus
    num_prompt_tokens: int
    num_computed_tokens: int
    num_cached_tokens: int
    token_ids: list[int]
    block_ids: list[int]

class SchedulerOutput:
    """One step's batch: R requests, T tokens, S sampled rows, W block-table width (views, no copies)."""

    num_reqs: int
    num_tokens: int
    max_query_len: int
    max_seq_len: int
    req_handles: npt.NDArray[np.int64]  # [R]
    input_ids: npt.NDArray[np.int32]  # [T]
    positions: npt.NDArray[np.int32]  # [T]
    slot_mapping: npt.NDArray[np.int64]  # [T]
    block_tables: npt.NDArray[np.int32]  # [R, W], padded with 0
    query_start_loc: npt.NDArray[np.int32]  # [R + 1]
    seq_lens: npt.NDArray[np.int32]  # [R]
    logits_indices: npt.NDArray[np.int32]  # [S]
    sample_handles: npt.NDArray[np.int64]  # [S]
    preempted_handles: npt.NDArray[np.int64]

class UpdateOutput:
    """One entry per sampled row whose request still exists."""

    def __len__(self) -> int: ...
    handles: npt.NDArray[np.int64]
    token_ids: npt.NDArray[np.int32]
    finish_reasons: npt.NDArray[np.int8]
    stop_reasons: npt.NDArray[np.int32]
    num_cached_tokens: npt.NDArray[np.int32]

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
    def request_state(self, request_id: str) -> RequestState: ...
    def reset_prefix_cache(self) -> bool: ...
    def check_invariants(self) -> None: ...
