"""Bad input raises a clear Python exception and leaves the scheduler usable."""

from __future__ import annotations

import numpy as np
import pytest

from kvserve import _core

from .helpers import make_scheduler, step


def params(**kw) -> _core.RequestParams:
    return _core.RequestParams(**kw)


def test_unknown_request_id_is_a_key_error(scheduler):
    with pytest.raises(_core.UnknownRequestError, match="no request with id 'nope'"):
        scheduler.abort("nope")
    with pytest.raises(KeyError):
        scheduler.request_state("nope")


def test_duplicate_request_id(scheduler):
    scheduler.add_request("a", [1], params())
    with pytest.raises(ValueError, match="duplicate request id 'a'"):
        scheduler.add_request("a", [2], params())
    assert scheduler.num_waiting == 1


@pytest.mark.parametrize(
    ("prompt", "kw", "message"),
    [
        ([], {}, "at least one token"),
        (list(range(65)), {}, "more than max_model_len"),
        ([1, -3], {}, "token id must be non-negative"),
        ([1], {"max_tokens": 0}, "max_tokens must be at least 1"),
        ([1], {"max_tokens": 2, "min_tokens": 3}, "min_tokens must be between"),
        ([1], {"min_tokens": -1}, "min_tokens must be between"),
    ],
)
def test_invalid_requests_are_value_errors(scheduler, prompt, kw, message):
    with pytest.raises(ValueError, match=message):
        scheduler.add_request("a", prompt, params(**kw))
    assert not scheduler.has_unfinished
    scheduler.check_invariants()


ENCODER_DECODER = _core.TaskKind.ENCODER_DECODER


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"num_encoder_tokens": 4}, "num_encoder_tokens is only for encoder-decoder requests, got 4"),
        ({"task": _core.TaskKind.PREFILL_ONLY, "num_encoder_tokens": 1}, "only for encoder-decoder requests"),
        ({"task": ENCODER_DECODER}, "an encoder-decoder request needs num_encoder_tokens of at least 1, got 0"),
        ({"task": ENCODER_DECODER, "num_encoder_tokens": -2}, "needs num_encoder_tokens of at least 1, got -2"),
        ({"task": ENCODER_DECODER, "num_encoder_tokens": 2, "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"task": _core.TaskKind.PREFILL_ONLY, "max_tokens": -1}, "max_tokens must be at least 0, got -1"),
    ],
)
def test_invalid_task_params_are_value_errors(scheduler, kw, message):
    with pytest.raises(ValueError, match=message):
        scheduler.add_request("a", [1, 2], params(**kw))
    assert not scheduler.has_unfinished
    assert scheduler.num_slots == 0  # a rejected request takes no slot
    scheduler.check_invariants()


def test_prefill_only_ignores_the_stopping_rules(scheduler):
    scheduler.add_request("a", [1, 2], params(task=_core.TaskKind.PREFILL_ONLY, max_tokens=0, min_tokens=5))
    _, update = step(scheduler)
    assert update.pooled_handles.tolist() == [0]


def test_capacity_check_counts_cross_blocks():
    scheduler = make_scheduler(num_blocks=3, block_size=4)
    with pytest.raises(ValueError, match="may need 4 KV blocks, but the cache has only 3"):
        scheduler.add_request("a", [1, 2, 3], params(max_tokens=2, task=ENCODER_DECODER, num_encoder_tokens=9))
    scheduler.add_request("a", [1, 2, 3], params(max_tokens=2, task=ENCODER_DECODER, num_encoder_tokens=8))


def test_unknown_or_mistyped_keywords_are_type_errors():
    with pytest.raises(TypeError, match="RequestParams\\(\\) got an unexpected keyword argument 'max_token'"):
        _core.RequestParams(max_token=3)
    with pytest.raises(TypeError, match="RequestParams\\(\\): max_tokens cannot be 'many'"):
        _core.RequestParams(max_tokens="many")
    with pytest.raises(TypeError, match="SchedulerConfig\\(\\) got an unexpected keyword argument 'blocks'"):
        _core.SchedulerConfig(blocks=3)


def test_request_larger_than_the_cache():
    scheduler = make_scheduler(num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match="may need 3 KV blocks, but the cache has only 2"):
        scheduler.add_request("a", list(range(9)), params(max_tokens=4))
    scheduler.add_request("b", list(range(8)), params(max_tokens=1))  # exactly fits


def test_prompt_over_budget_without_chunking():
    scheduler = make_scheduler(max_num_batched_tokens=4, enable_chunked_prefill=False)
    with pytest.raises(ValueError, match="without chunked prefill"):
        scheduler.add_request("a", list(range(5)), params())


def test_update_protocol_errors(scheduler):
    with pytest.raises(RuntimeError, match="without a scheduled batch"):
        scheduler.update(np.array([], dtype=np.int32))
    scheduler.add_request("a", [1], params())
    scheduler.schedule()
    scheduler.schedule()  # overlapped: "a" again, its first output token in flight
    with pytest.raises(RuntimeError, match="two steps not updated"):
        scheduler.schedule()
    with pytest.raises(ValueError, match="got 2 sampled tokens for 1 sampled rows"):
        scheduler.update(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="sampled token id must be non-negative"):
        scheduler.update(np.array([-1], dtype=np.int32))
    scheduler.update(np.array([5], dtype=np.int32))
    scheduler.update(np.array([6], dtype=np.int32))
    assert scheduler.request_state("a").token_ids == [1, 5, 6]
    step(scheduler)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_blocks", 0),
        ("block_size", 0),
        ("max_num_seqs", 0),
        ("max_num_batched_tokens", -1),
        ("max_model_len", 1),
        ("max_num_encoder_input_tokens", -1),
    ],
)
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        make_scheduler(**{field: value})
