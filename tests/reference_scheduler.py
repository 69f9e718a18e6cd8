"""Pure-Python model of the C++ block manager and scheduler (`kvserve._core`).

It is the executable specification of the core: the hypothesis traces in `tests/core` drive it and the C++
scheduler side by side and require identical decisions, and `benchmarks/bench_scheduler.py` uses it as the
baseline. It favours plain, obviously-correct code over speed; the C++ core must agree with it exactly.
It lives with the tests, not in the package: nothing at run time uses it.

Token regions of one request (the scheduler never has an `is_prefill` flag; a counter catches up):

    | computed (KV in blocks) | scheduled this step | not yet scheduled |
    0                  num_computed          num_computed + n        num_tokens

Block table of a request after a step: ceil((num_computed + n) / block_size) blocks; the first
(num_computed + n) // block_size of them are full and, with prefix caching, registered by chained hash.

Task kinds:
- generate: the rules above; a request whose tokens are all computed samples one token per step.
- prefill only: admitted only when its whole (non-cached) prompt fits the step's token budget, never
  chunked; listed in pool_handles in that step, never sampled, finished (STOP) by the next update.
- encoder-decoder: a generate request that, at each admission from waiting, runs its encoder: it costs
  num_encoder_tokens of the step's encoder budget and takes ceil(num_encoder_tokens / block_size) fresh
  cross blocks (never cached), held while running and given back on finish, abort and preemption. It
  neither reads nor registers prefix-cache blocks (the hashes do not cover the encoder input).
Every request holds the lowest free batch slot from add_request until it finishes or is aborted.

Overlapped scheduling: schedule() may run once more before update() of the previous step (two steps
pending at most). Each sampled row adds a placeholder to its request (a token in flight). A running request
with a placeholder is scheduled again, its placeholder as input (-1 in input_ids, listed in
placeholder_indices/placeholder_slots), only if allow_overlap and the placeholder cannot end it on length;
update() resolves the oldest step: each row's token replaces one placeholder, then the stopping rules run,
and a request that finishes drops its rows from the step still pending (those tokens are never reported). A
request preempted with a token in flight finishes from waiting if that token stops it. Only blocks full of
real tokens are registered in the prefix cache.
"""

from __future__ import annotations

import bisect
import enum
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


class FinishReason(enum.IntEnum):
    NONE = 0
    STOP = 1
    LENGTH = 2
    ABORT = 3


class Policy(enum.IntEnum):
    FCFS = 0
    PRIORITY = 1


class TaskKind(enum.IntEnum):
    GENERATE = 0
    PREFILL_ONLY = 1
    ENCODER_DECODER = 2


@dataclass(slots=True)
class SchedulerConfig:
    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    policy: Policy = Policy.FCFS
    max_num_encoder_input_tokens: int = 0  # 0: max_num_batched_tokens


@dataclass(slots=True)
class RequestParams:
    max_tokens: int = 16
    min_tokens: int = 0
    eos_token_ids: list[int] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    priority: int = 0
    arrival_time: float = 0.0
    cache_salt: str = ""
    skip_prefix_cache: bool = False  # compute every prompt token (prompt logprobs); blocks still registered
    task: TaskKind = TaskKind.GENERATE
    num_encoder_tokens: int = 0
    allow_overlap: bool = True


@dataclass(slots=True)
class _Block:
    block_id: int
    ref_count: int = 0
    # (hash key) while registered in the prefix cache, else None.
    key: tuple | None = None


class ReferenceBlockManager:
    """Fixed pool, ref counts, LRU free queue, prefix cache keyed by the full chained block content."""

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.blocks = [_Block(i) for i in range(num_blocks)]
        # Insertion order is LRU order: the first key is evicted first.
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cache: dict[tuple, int] = {}
        self.num_query_requests = 0
        self.num_query_tokens = 0
        self.num_hit_tokens = 0

    # -- queries ----------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    def free_block_ids(self) -> list[int]:
        return list(self.free_queue)

    # -- prefix cache -----------------------------------------------------------------------------
    def find_cached_blocks(self, keys: list[tuple]) -> list[int]:
        """Longest run of cached blocks for the leading `keys`."""
        hits: list[int] = []
        for key in keys:
            block_id = self.cache.get(key)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def record_query(self, num_tokens: int, num_hit_tokens: int) -> None:
        self.num_query_requests += 1
        self.num_query_tokens += num_tokens
        self.num_hit_tokens += num_hit_tokens

    # -- allocation -------------------------------------------------------------------------------
    def num_blocks_to_take(self, cached_hits: list[int], num_new_blocks: int) -> int:
        """Free blocks that an allocation would consume (new blocks plus free cached hits)."""
        return num_new_blocks + sum(1 for b in cached_hits if self.blocks[b].ref_count == 0)

    def touch(self, block_ids: list[int]) -> None:
        for block_id in block_ids:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_queue[block_id]
            block.ref_count += 1

    def take_free(self, count: int) -> list[int]:
        taken = []
        for _ in range(count):
            block_id, _ = self.free_queue.popitem(last=False)
            block = self.blocks[block_id]
            if block.key is not None:
                del self.cache[block.key]
                block.key = None
            block.ref_count = 1
            taken.append(block_id)
        return taken

    def register(self, block_id: int, key: tuple) -> None:
        """Cache a full block unless the same content is cached already (the first copy wins)."""
        if self.enable_caching and key not in self.cache:
            self.cache[key] = block_id
            self.blocks[block_id].key = key

    def free(self, block_ids: list[int]) -> None:
        """Free in reverse so chain tails are evicted first; uncached blocks are reused first."""
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_queue[block_id] = None
                if block.key is None:
                    self.free_queue.move_to_end(block_id, last=False)

    def reset_prefix_cache(self) -> bool:
        if any(b.ref_count for b in self.blocks):
            return False
        for block in self.blocks:
            block.key = None
        self.cache.clear()
        return True

    def check_invariants(self) -> None:
        free = set(self.free_queue)
        assert len(free) == len(self.free_queue)
        for block in self.blocks:
            assert (block.ref_count == 0) == (block.block_id in free), block
            assert block.ref_count >= 0
            if block.key is not None:
                assert self.cache[block.key] == block.block_id
        assert len(self.cache) == sum(b.key is not None for b in self.blocks)


@dataclass(slots=True)
class ReferenceRequest:
    request_id: str
    handle: int
    seq: int
    token_ids: list[int]
    num_prompt_tokens: int
    params: RequestParams
    num_computed_tokens: int = 0
    num_output_placeholders: int = 0
    num_cached_tokens: int = -1
    block_ids: list[int] = field(default_factory=list)
    # Keys of the full blocks of token_ids, computed lazily (content chain: salt, then token tuples).
    block_keys: list[tuple] = field(default_factory=list)
    num_registered_blocks: int = 0
    status: str = "waiting"
    cross_block_ids: list[int] = field(default_factory=list)
    slot: int = -1

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def task(self) -> TaskKind:
        return self.params.task

    @property
    def reads_prefix_cache(self) -> bool:
        return not self.params.skip_prefix_cache and self.task != TaskKind.ENCODER_DECODER

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    def full_block_keys(self, count: int, block_size: int) -> list[tuple]:
        while len(self.block_keys) < count:
            i = len(self.block_keys)
            parent = self.block_keys[-1] if self.block_keys else (self.params.cache_salt,)
            self.block_keys.append((parent, tuple(self.token_ids[i * block_size : (i + 1) * block_size])))
        return self.block_keys[:count]


@dataclass(slots=True)
class ReferenceOutput:
    req_handles: list[int]
    input_ids: list[int]
    positions: list[int]
    slot_mapping: list[int]
    block_tables: list[list[int]]
    query_start_loc: list[int]
    seq_lens: list[int]
    logits_indices: list[int]
    sample_handles: list[int]
    preempted_handles: list[int]
    req_slots: list[int] = field(default_factory=list)
    sample_slots: list[int] = field(default_factory=list)
    pool_handles: list[int] = field(default_factory=list)
    pool_req_indices: list[int] = field(default_factory=list)
    pool_slots: list[int] = field(default_factory=list)
    encoder_handles: list[int] = field(default_factory=list)
    encoder_req_indices: list[int] = field(default_factory=list)
    cross_block_tables: list[list[int]] = field(default_factory=list)
    cross_seq_lens: list[int] = field(default_factory=list)
    cross_slot_mapping: list[int] = field(default_factory=list)
    placeholder_indices: list[int] = field(default_factory=list)
    placeholder_slots: list[int] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ReferenceUpdate:
    deltas: list[ReferenceDelta]
    pooled_handles: list[int]


@dataclass(slots=True)
class ReferenceDelta:
    handle: int
    token_id: int
    finish_reason: FinishReason
    stop_reason: int
    num_cached_tokens: int


def kv_tokens_needed(num_prompt_tokens: int, max_tokens: int, max_model_len: int) -> int:
    """Most tokens the request ever holds in KV: the last sampled token never gets KV."""
    return max(num_prompt_tokens, min(num_prompt_tokens + max_tokens, max_model_len) - 1)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ReferenceScheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.encoder_budget = config.max_num_encoder_input_tokens or config.max_num_batched_tokens
        self.kv = ReferenceBlockManager(config.num_blocks, config.block_size, config.enable_prefix_caching)
        self.requests: dict[str, ReferenceRequest] = {}
        self.by_handle: dict[int, ReferenceRequest] = {}
        self.waiting: list[tuple[tuple, int]] = []  # sorted (policy key, handle)
        self.running: list[ReferenceRequest] = []  # sorted by policy key
        self.next_handle = 0
        self.num_slots = 0  # high-water mark of slots in use
        # Scheduled steps not updated yet, oldest first: (sampled handles, pooled handles).
        self.pending: list[tuple[list[int], list[int]]] = []

    def _key(self, req: ReferenceRequest) -> tuple:
        if self.config.policy == Policy.PRIORITY:
            return (req.params.priority, req.params.arrival_time, req.seq)
        return (req.seq,)

    # -- requests ---------------------------------------------------------------------------------
    def _validate(self, prompt_token_ids: list[int], params: RequestParams) -> None:
        cfg = self.config
        num_prompt = len(prompt_token_ids)
        if not prompt_token_ids:
            raise ValueError("prompt must contain at least one token")
        if num_prompt > cfg.max_model_len:
            raise ValueError("prompt too long")
        if any(t < 0 for t in prompt_token_ids):
            raise ValueError("token id must be non-negative")
        if params.task == TaskKind.PREFILL_ONLY:
            if params.max_tokens < 0:
                raise ValueError("bad max_tokens")
            if num_prompt > cfg.max_num_batched_tokens:
                raise ValueError("a prefill-only prompt longer than max_num_batched_tokens")
            kv_tokens = num_prompt
        else:
            if params.max_tokens < 1 or params.min_tokens < 0 or params.min_tokens > params.max_tokens:
                raise ValueError("bad max_tokens/min_tokens")
            kv_tokens = kv_tokens_needed(num_prompt, params.max_tokens, cfg.max_model_len)
        if params.task == TaskKind.ENCODER_DECODER:
            if not 1 <= params.num_encoder_tokens <= self.encoder_budget:
                raise ValueError("bad num_encoder_tokens")
        elif params.num_encoder_tokens != 0:
            raise ValueError("num_encoder_tokens on a request that is not encoder-decoder")
        needed = ceil_div(kv_tokens, cfg.block_size) + ceil_div(params.num_encoder_tokens, cfg.block_size)
        if needed > cfg.num_blocks:
            raise ValueError("request needs more KV blocks than the cache has")
        if not cfg.enable_chunked_prefill and num_prompt > cfg.max_num_batched_tokens:
            raise ValueError("prompt longer than max_num_batched_tokens without chunked prefill")

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: RequestParams) -> int:
        if request_id in self.requests:
            raise ValueError(f"duplicate request id {request_id!r}")
        self._validate(prompt_token_ids, params)
        handle = self.next_handle
        self.next_handle += 1
        req = ReferenceRequest(request_id, handle, handle, list(prompt_token_ids), len(prompt_token_ids), params)
        used_slots = {r.slot for r in self.requests.values()}
        req.slot = min(s for s in range(self.num_slots + 1) if s not in used_slots)
        self.num_slots = max(self.num_slots, req.slot + 1)
        self.requests[request_id] = req
        self.by_handle[handle] = req
        bisect.insort(self.waiting, (self._key(req), handle))
        return handle

    def abort(self, request_id: str) -> int:
        req = self.requests.get(request_id)
        if req is None:
            raise KeyError(request_id)
        if req.status == "running":
            self.running.remove(req)
        else:
            self.waiting.remove((self._key(req), req.handle))
        self._release(req)
        return req.handle

    def _free_blocks(self, req: ReferenceRequest) -> None:
        self.kv.free(req.cross_block_ids)
        req.cross_block_ids = []
        self.kv.free(req.block_ids)
        req.block_ids = []

    def _release(self, req: ReferenceRequest) -> None:
        self._free_blocks(req)
        del self.requests[req.request_id]
        del self.by_handle[req.handle]

    def _preempt(self, req: ReferenceRequest) -> None:
        self._free_blocks(req)
        req.num_computed_tokens = 0
        req.num_registered_blocks = 0
        req.status = "waiting"
        bisect.insort(self.waiting, (self._key(req), req.handle))

    # -- scheduling -------------------------------------------------------------------------------
    def _try_allocate(self, req: ReferenceRequest, hits: list[int], num_new: int, num_cross: int = 0) -> bool:
        bs = self.config.block_size
        total = req.num_computed_tokens + num_new
        num_new_blocks = max(ceil_div(total, bs) - len(req.block_ids) - len(hits), 0)
        if self.kv.num_blocks_to_take(hits, num_new_blocks + num_cross) > self.kv.num_free_blocks:
            return False
        self.kv.touch(hits)
        req.block_ids += hits  # only to a request that holds no blocks; hits are registered already
        req.num_registered_blocks += len(hits)
        req.block_ids += self.kv.take_free(num_new_blocks)
        req.cross_block_ids += self.kv.take_free(num_cross)
        num_full = min(total, req.num_tokens) // bs  # placeholders have no id to hash yet
        if self.config.enable_prefix_caching and req.task != TaskKind.ENCODER_DECODER:
            keys = req.full_block_keys(num_full, bs)
            for i in range(req.num_registered_blocks, num_full):
                self.kv.register(req.block_ids[i], keys[i])
        req.num_registered_blocks = max(req.num_registered_blocks, num_full)
        return True

    def _has_work(self, req: ReferenceRequest) -> bool:
        in_flight = req.num_output_placeholders
        if in_flight == 0:
            return req.num_computed_tokens < req.num_tokens
        return (
            req.params.allow_overlap
            and req.num_output_tokens + in_flight < req.params.max_tokens
            and req.num_tokens + in_flight < self.config.max_model_len
        )

    def schedule(self) -> ReferenceOutput:
        if len(self.pending) >= 2:
            raise RuntimeError("schedule() called with two steps not updated")
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        encoder_budget = self.encoder_budget
        scheduled: list[tuple[ReferenceRequest, int]] = []
        encoder_runs: list[ReferenceRequest] = []
        preempted: list[int] = []
        queries = hits_tokens = 0

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            if not self._has_work(req):
                i += 1
                continue
            num_new = min(req.num_tokens + req.num_output_placeholders - req.num_computed_tokens, budget)
            while not self._try_allocate(req, [], num_new):
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim.handle)
                if victim is req:
                    break
            if req.status != "running":
                break
            scheduled.append((req, num_new))
            budget -= num_new
            i += 1

        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
                req = self.by_handle[self.waiting[0][1]]
                if req.num_output_placeholders:
                    break  # preempted with a token in flight: readmitted once update() resolves it
                if req.params.num_encoder_tokens > encoder_budget:
                    break
                hits: list[int] = []
                if cfg.enable_prefix_caching and req.reads_prefix_cache:
                    keys = req.full_block_keys((req.num_tokens - 1) // cfg.block_size, cfg.block_size)
                    hits = self.kv.find_cached_blocks(keys)
                num_new = req.num_tokens - len(hits) * cfg.block_size
                may_chunk = cfg.enable_chunked_prefill and req.task != TaskKind.PREFILL_ONLY
                if not may_chunk and num_new > budget:
                    break
                num_new = min(num_new, budget)
                req.num_computed_tokens = len(hits) * cfg.block_size
                num_cross = ceil_div(req.params.num_encoder_tokens, cfg.block_size)
                if not self._try_allocate(req, hits, num_new, num_cross):
                    req.num_computed_tokens = 0
                    break
                if cfg.enable_prefix_caching and req.reads_prefix_cache:
                    self.kv.record_query(req.num_tokens, len(hits) * cfg.block_size)
                    queries += req.num_tokens
                    hits_tokens += len(hits) * cfg.block_size
                if req.num_cached_tokens < 0:
                    req.num_cached_tokens = len(hits) * cfg.block_size
                self.waiting.pop(0)
                req.status = "running"
                bisect.insort(self.running, req, key=self._key)
                scheduled.append((req, num_new))
                if req.task == TaskKind.ENCODER_DECODER:
                    encoder_runs.append(req)
                    encoder_budget -= req.params.num_encoder_tokens
                budget -= num_new

        out = self._build_output(scheduled, encoder_runs, preempted)
        num_free = self.kv.num_free_blocks
        out.stats = {
            "num_running": len(self.running),
            "num_waiting": len(self.waiting),
            "num_used_blocks": cfg.num_blocks - num_free,  # free iff unreferenced (check_invariants)
            "num_free_blocks": num_free,
            "num_total_blocks": cfg.num_blocks,
            "prefix_cache_queries": queries,
            "prefix_cache_hits": hits_tokens,
            "num_preemptions": len(preempted),
            "num_scheduled_tokens": len(out.input_ids),
            "num_scheduled_reqs": len(out.req_handles),
            "num_encoder_tokens": sum(r.params.num_encoder_tokens for r in encoder_runs),
        }
        return out

    def _build_output(
        self, scheduled: list[tuple[ReferenceRequest, int]], encoder_runs: list[ReferenceRequest], preempted: list[int]
    ) -> ReferenceOutput:
        bs = self.config.block_size
        out = ReferenceOutput([], [], [], [], [], [0], [], [], [], preempted)
        width = max((len(r.block_ids) for r, _ in scheduled), default=0)
        cross_width = max((len(r.cross_block_ids) for r, _ in scheduled), default=0)
        encoder_handles = {r.handle for r in encoder_runs}
        for index, (req, num_new) in enumerate(scheduled):
            start = req.num_computed_tokens
            out.req_handles.append(req.handle)
            out.req_slots.append(req.slot)
            for pos in range(start, start + num_new):
                if pos < req.num_tokens:
                    out.input_ids.append(req.token_ids[pos])
                else:
                    out.placeholder_indices.append(len(out.input_ids))
                    out.placeholder_slots.append(req.slot)
                    out.input_ids.append(-1)
                out.positions.append(pos)
                out.slot_mapping.append(req.block_ids[pos // bs] * bs + pos % bs)
            out.block_tables.append(req.block_ids + [0] * (width - len(req.block_ids)))
            out.cross_block_tables.append(req.cross_block_ids + [0] * (cross_width - len(req.cross_block_ids)))
            out.cross_seq_lens.append(req.params.num_encoder_tokens)
            if req.handle in encoder_handles:
                out.encoder_handles.append(req.handle)
                out.encoder_req_indices.append(index)
                for pos in range(req.params.num_encoder_tokens):
                    out.cross_slot_mapping.append(req.cross_block_ids[pos // bs] * bs + pos % bs)
            out.query_start_loc.append(out.query_start_loc[-1] + num_new)
            out.seq_lens.append(start + num_new)
            req.num_computed_tokens = start + num_new
            if req.num_computed_tokens == req.num_tokens + req.num_output_placeholders:
                if req.task == TaskKind.PREFILL_ONLY:
                    out.pool_handles.append(req.handle)
                    out.pool_req_indices.append(index)
                    out.pool_slots.append(req.slot)
                else:
                    out.logits_indices.append(out.query_start_loc[-1] - 1)
                    out.sample_handles.append(req.handle)
                    out.sample_slots.append(req.slot)
                    req.num_output_placeholders += 1
        if scheduled:
            self.pending.append((list(out.sample_handles), list(out.pool_handles)))
        return out

    def update(self, sampled_token_ids: list[int]) -> ReferenceUpdate:
        if not self.pending:
            raise RuntimeError("update() without a scheduled batch")
        samples, pools = self.pending[0]
        if len(sampled_token_ids) != len(samples):
            raise ValueError("wrong number of sampled tokens")
        if any(t < 0 for t in sampled_token_ids):
            raise ValueError("sampled token id must be non-negative")
        deltas = []
        finished = []
        for handle, token in zip(samples, sampled_token_ids):
            req = self.by_handle.get(handle)
            if req is None:
                continue  # aborted or finished between schedule and update
            req.num_output_placeholders -= 1
            req.token_ids.append(int(token))
            reason, stop_reason = self._check_stop(req, int(token))
            deltas.append(ReferenceDelta(handle, int(token), reason, stop_reason, req.num_cached_tokens))
            if reason != FinishReason.NONE:
                finished.append(req)
        # Prefill-only requests are done once their prompt is computed; aborted ones are gone already.
        pooled = [self.by_handle[h] for h in pools if h in self.by_handle]
        self.pending.pop(0)
        for req in finished + pooled:
            if req.status == "running":
                self.running.remove(req)
            else:  # preempted by the overlapping schedule()
                self.waiting.remove((self._key(req), req.handle))
            self._release(req)
        return ReferenceUpdate(deltas, [req.handle for req in pooled])

    def _check_stop(self, req: ReferenceRequest, token: int) -> tuple[FinishReason, int]:
        p = req.params
        if req.num_tokens >= self.config.max_model_len or req.num_output_tokens >= p.max_tokens:
            return FinishReason.LENGTH, -1
        if req.num_output_tokens < p.min_tokens:
            return FinishReason.NONE, -1
        if not p.ignore_eos and token in p.eos_token_ids:
            return FinishReason.STOP, -1
        if token in p.stop_token_ids:
            return FinishReason.STOP, token
        return FinishReason.NONE, -1

    # -- introspection ----------------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def check_invariants(self) -> None:
        self.kv.check_invariants()
        bs = self.config.block_size
        refs = [0] * self.config.num_blocks
        for req in self.running:
            assert len(req.block_ids) == ceil_div(req.num_computed_tokens, bs)
            assert 0 <= req.num_output_placeholders <= len(self.pending)
            assert len(req.cross_block_ids) == ceil_div(req.params.num_encoder_tokens, bs)
            for b in req.block_ids + req.cross_block_ids:
                refs[b] += 1
        for _, handle in self.waiting:
            assert not self.by_handle[handle].block_ids
            assert not self.by_handle[handle].cross_block_ids
        assert refs == [b.ref_count for b in self.kv.blocks]
        slots = [req.slot for req in self.requests.values()]
        assert len(set(slots)) == len(slots)
        assert all(0 <= slot < self.num_slots for slot in slots)


def table(rows: list[list[int]]) -> np.ndarray:
    """[R, W] int32, W from the (equal-length) rows, so that R > 0 with W == 0 keeps its shape."""
    return np.asarray(rows, dtype=np.int32).reshape(len(rows), len(rows[0]) if rows else 0)


def as_arrays(out: ReferenceOutput) -> dict[str, np.ndarray]:
    """The reference output in the dtypes and shapes of the C++ `SchedulerOutput` arrays."""
    return {
        "req_handles": np.asarray(out.req_handles, dtype=np.int64),
        "input_ids": np.asarray(out.input_ids, dtype=np.int32),
        "positions": np.asarray(out.positions, dtype=np.int32),
        "slot_mapping": np.asarray(out.slot_mapping, dtype=np.int64),
        "block_tables": table(out.block_tables),
        "query_start_loc": np.asarray(out.query_start_loc, dtype=np.int32),
        "seq_lens": np.asarray(out.seq_lens, dtype=np.int32),
        "logits_indices": np.asarray(out.logits_indices, dtype=np.int32),
        "sample_handles": np.asarray(out.sample_handles, dtype=np.int64),
        "preempted_handles": np.asarray(out.preempted_handles, dtype=np.int64),
        "req_slots": np.asarray(out.req_slots, dtype=np.int32),
        "sample_slots": np.asarray(out.sample_slots, dtype=np.int32),
        "pool_handles": np.asarray(out.pool_handles, dtype=np.int64),
        "pool_req_indices": np.asarray(out.pool_req_indices, dtype=np.int32),
        "pool_slots": np.asarray(out.pool_slots, dtype=np.int32),
        "encoder_handles": np.asarray(out.encoder_handles, dtype=np.int64),
        "encoder_req_indices": np.asarray(out.encoder_req_indices, dtype=np.int32),
        "cross_block_tables": table(out.cross_block_tables),
        "cross_seq_lens": np.asarray(out.cross_seq_lens, dtype=np.int32),
        "cross_slot_mapping": np.asarray(out.cross_slot_mapping, dtype=np.int64),
        "placeholder_indices": np.asarray(out.placeholder_indices, dtype=np.int32),
        "placeholder_slots": np.asarray(out.placeholder_slots, dtype=np.int32),
    }
