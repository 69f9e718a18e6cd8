"""Input staging: a step's arrays packed into one buffer and viewed back, exactly."""

from __future__ import annotations

import numpy as np
import torch

from kvserve.model.input_staging import ALIGNMENT, InputStaging, packed_layout, staging_capacity


def step_arrays(rng: np.random.Generator, tokens: int, reqs: int, width: int) -> list[np.ndarray]:
    return [
        rng.integers(0, 50000, tokens, dtype=np.int32),  # input ids
        rng.integers(0, 4096, tokens, dtype=np.int32),  # positions
        rng.integers(-1, 1 << 40, tokens, dtype=np.int64),  # slot mapping
        rng.integers(0, 1000, (reqs, width), dtype=np.int32),  # block tables
        rng.integers(1, 4096, reqs, dtype=np.int32),  # seq lens
        np.arange(reqs + 1, dtype=np.int32),  # query start loc
        rng.random(3, dtype=np.float32),
        np.array([True, False, True]),
    ]


def test_every_array_round_trips_with_its_dtype_and_shape():
    rng = np.random.default_rng(0)
    staging = InputStaging(torch.device("cpu"), capacity=1 << 12)
    for tokens, reqs, width in ((7, 3, 5), (1, 1, 1), (0, 0, 0), (129, 17, 33)):
        arrays = step_arrays(rng, tokens, reqs, width)
        tensors = staging.to_device(arrays)
        for array, tensor in zip(arrays, tensors):
            assert tensor.dtype == torch.from_numpy(array).dtype
            assert tuple(tensor.shape) == array.shape
            np.testing.assert_array_equal(tensor.numpy(), array)


def test_offsets_are_aligned_for_every_element_type():
    arrays = [np.zeros(3, np.int32), np.zeros(1, np.int64), np.zeros((2, 3), np.int32), np.zeros(0, np.int64)]
    offsets, used = packed_layout(arrays)
    assert offsets == [0, 16, 32, 64]
    assert used == 64
    tensors = InputStaging(torch.device("cpu"), capacity=64).to_device(arrays)
    assert all(t.storage_offset() * t.element_size() % ALIGNMENT == 0 for t in tensors)


def test_non_contiguous_arrays_are_packed_by_value():
    table = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    (tensor,) = InputStaging(torch.device("cpu"), capacity=64).to_device([table])
    np.testing.assert_array_equal(tensor.numpy(), table)


def test_a_step_larger_than_the_buffer_grows_it():
    staging = InputStaging(torch.device("cpu"), capacity=32)
    big = np.arange(100, dtype=np.int64)
    (tensor,) = staging.to_device([big])
    np.testing.assert_array_equal(tensor.numpy(), big)
    assert staging._buffers[0].host.numel() >= 800


def test_the_previous_step_stays_intact_while_the_next_one_packs():
    # Two alternating buffers: step N's tensors may still be read (on CUDA: copied) while step N+1 packs.
    staging = InputStaging(torch.device("cpu"), capacity=64)
    (first,) = staging.to_device([np.full(4, 1, np.int32)])
    (second,) = staging.to_device([np.full(4, 2, np.int32)])
    assert first.tolist() == [1, 1, 1, 1] and second.tolist() == [2, 2, 2, 2]


def test_the_capacity_covers_the_largest_step():
    rng = np.random.default_rng(1)
    tokens, reqs, width = 256, 32, 64
    arrays = step_arrays(rng, tokens, reqs, width)[:6] + [np.zeros(tokens, np.int32)]
    assert packed_layout(arrays)[1] <= staging_capacity(tokens, reqs, width)
