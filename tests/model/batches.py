"""Building the runner's inputs by hand: prepared requests and ExecuteBatch messages, without the actors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kvserve.messages import ExecuteBatch, NewRequest
from kvserve.request import EngineRequest, PoolingParams, PreparedRequest
from kvserve.sampling_params import SamplingParams


def prepared(
    request_id: str,
    prompt: list[int],
    params: SamplingParams | PoolingParams,
    eos_token_ids: tuple[int, ...] = (0,),
) -> PreparedRequest:
    if isinstance(params, PoolingParams):
        request = EngineRequest(request_id, prompt, pooling=params)
        return PreparedRequest(request, prompt, 0, eos_token_ids)
    request = EngineRequest(request_id, prompt, sampling=params)
    return PreparedRequest(request, prompt, params.max_tokens or 16, eos_token_ids)


def _i32(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def _i64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass(slots=True)
class Row:
    """One scheduled request of a hand-made step."""

    handle: int
    slot: int
    token_ids: list[int]  # every known token of the request
    num_computed: int  # tokens computed before this step
    num_new: int  # tokens computed in this step
    blocks: list[int]
    sample: bool = True  # a sampled row when the step reaches its last known token
    pool: bool = False
    new: NewRequest | None = None


@dataclass(slots=True)
class BatchBuilder:
    block_size: int
    step: int = 0
    finished_slots: list[int] = field(default_factory=list)

    def build(self, rows: list[Row]) -> ExecuteBatch:
        input_ids, positions, slot_mapping, starts = [], [], [], [0]
        logits_indices, sample_handles, sample_slots = [], [], []
        pool = [(r, row) for r, row in enumerate(rows) if row.pool]
        width = max((len(row.blocks) for row in rows), default=0)
        for row in rows:
            span = range(row.num_computed, row.num_computed + row.num_new)
            input_ids += [row.token_ids[p] for p in span]
            positions += list(span)
            slot_mapping += [row.blocks[p // self.block_size] * self.block_size + p % self.block_size for p in span]
            starts.append(len(input_ids))
            if row.sample and not row.pool and span.stop == len(row.token_ids):
                logits_indices.append(len(input_ids) - 1)
                sample_handles.append(row.handle)
                sample_slots.append(row.slot)
        seq_lens = [row.num_computed + row.num_new for row in rows]
        batch = ExecuteBatch(
            step=self.step,
            req_handles=_i64([row.handle for row in rows]),
            req_slots=_i32([row.slot for row in rows]),
            input_ids=_i32(input_ids),
            positions=_i32(positions),
            slot_mapping=_i64(slot_mapping),
            block_tables=np.array([row.blocks + [0] * (width - len(row.blocks)) for row in rows], dtype=np.int32),
            query_start_loc=_i32(starts),
            seq_lens=_i32(seq_lens),
            logits_indices=_i32(logits_indices),
            sample_handles=_i64(sample_handles),
            sample_slots=_i32(sample_slots),
            pool_handles=_i64([row.handle for _, row in pool]),
            pool_req_indices=_i32([r for r, _ in pool]),
            pool_slots=_i32([row.slot for _, row in pool]),
            encoder_handles=_i64([]),
            encoder_req_indices=_i32([]),
            cross_block_tables=np.zeros((len(rows), 0), dtype=np.int32),
            cross_seq_lens=_i32([0] * len(rows)),
            cross_slot_mapping=_i64([]),
            max_query_len=max((row.num_new for row in rows), default=0),
            max_seq_len=max(seq_lens, default=0),
            new_requests=tuple(row.new for row in rows if row.new is not None),
            finished_slots=tuple(self.finished_slots),
        )
        self.step += 1
        self.finished_slots = []
        return batch


class RunnerDriver:
    """Plays the scheduler for a ModelRunner: whole prompts in one step, then one token a step, each request
    in its own range of KV blocks; a finished request frees its slot for the next one."""

    def __init__(self, runner, max_blocks_per_request: int = 32) -> None:
        self.runner = runner
        self.builder = BatchBuilder(runner.config.block_size)
        self.max_blocks = max_blocks_per_request
        self.rows: dict[int, Row] = {}  # by slot
        self.pending: list[Row] = []
        self.next_handle = 0

    def add(self, slot: int, request: PreparedRequest) -> int:
        handle = self.next_handle
        self.next_handle += 1
        blocks = list(range(1 + slot * self.max_blocks, 1 + (slot + 1) * self.max_blocks))
        tokens = list(request.prompt_token_ids)
        pool = request.request.pooling is not None
        row = Row(handle, slot, tokens, 0, len(tokens), blocks, pool=pool, new=NewRequest(handle, slot, request))
        self.pending.append(row)
        return handle

    def finish(self, slot: int) -> None:
        del self.rows[slot]
        self.builder.finished_slots.append(slot)

    def step(self):
        """One step over every live request; returns (batch, result)."""
        for row in self.rows.values():
            row.num_computed, row.num_new, row.new = len(row.token_ids) - 1, 1, None
        scheduled = [*self.rows.values(), *self.pending]
        for row in self.pending:
            self.rows[row.slot] = row
        self.pending = []
        batch = self.builder.build(scheduled)
        result = self.runner.execute(batch)
        for slot, token in zip(batch.sample_slots.tolist(), result.sampled_token_ids.tolist()):
            self.rows[slot].token_ids.append(token)
        for slot in batch.pool_slots.tolist():
            self.finish(slot)
        return batch, result
