"""Batch arrays are views of the C++ output: no copies, and they outlive the scheduler safely."""

from __future__ import annotations

import gc

import numpy as np

from kvserve import _core

from .helpers import make_scheduler


def data_pointer(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_arrays_view_the_output_buffers():
    scheduler = make_scheduler()
    scheduler.add_request("a", list(range(10)), _core.RequestParams(max_tokens=2))
    out = scheduler.schedule()
    first, second = out.input_ids, out.input_ids
    assert data_pointer(first) == data_pointer(second)
    assert not first.flags.owndata
    assert first.base is out
    assert out.block_tables.base is out and out.block_tables.flags.c_contiguous
    assert (first.dtype, out.slot_mapping.dtype, out.block_tables.dtype) == (np.int32, np.int64, np.int32)


def test_arrays_keep_their_output_alive():
    scheduler = make_scheduler()
    scheduler.add_request("a", list(range(10)), _core.RequestParams(max_tokens=2))
    positions = scheduler.schedule().positions
    del scheduler
    gc.collect()
    assert positions.tolist() == list(range(10))


def test_update_output_views():
    scheduler = make_scheduler()
    scheduler.add_request("a", [1, 2], _core.RequestParams(max_tokens=2))
    scheduler.schedule()
    update = scheduler.update(np.array([7], dtype=np.int32))
    assert update.token_ids.base is update
    assert (update.handles.dtype, update.finish_reasons.dtype) == (np.int64, np.int8)


def test_new_arrays_are_views_too():
    scheduler = make_scheduler()
    params = _core.RequestParams(max_tokens=2, task=_core.TaskKind.ENCODER_DECODER, num_encoder_tokens=5)
    scheduler.add_request("a", [1, 2], params)
    scheduler.add_request("b", [3], _core.RequestParams(task=_core.TaskKind.PREFILL_ONLY))
    out = scheduler.schedule()
    names = ["req_slots", "sample_slots", "pool_handles", "pool_req_indices", "pool_slots", "encoder_handles"]
    names += ["encoder_req_indices", "cross_block_tables", "cross_seq_lens", "cross_slot_mapping"]
    for name in names:
        array = getattr(out, name)
        assert array.base is out and not array.flags.owndata, name
    assert out.cross_block_tables.shape == (2, 2) and out.cross_block_tables.flags.c_contiguous
    assert (out.pool_handles.dtype, out.cross_slot_mapping.dtype, out.req_slots.dtype) == (np.int64, np.int64, np.int32)
    update = scheduler.update(np.array([7], dtype=np.int32))
    assert update.pooled_handles.base is update and update.pooled_handles.tolist() == [1]
