"""The device-side token store that fills an overlapped step's placeholder inputs, and the host copy."""

from __future__ import annotations

import numpy as np
import torch

from kvserve.model.sampled_tokens import HostCopy, LastSampled


def test_placeholders_take_the_last_token_of_their_slot():
    last = LastSampled(torch.device("cpu"), capacity=2)
    last.record(np.array([0, 1], dtype=np.int32), torch.tensor([5, 6], dtype=torch.int32))
    last.record(np.array([5, 0], dtype=np.int32), torch.tensor([7, 8], dtype=torch.int32))  # grows past 2
    scheduler_array = np.array([3, -1, 4, -1, -1], dtype=np.int32)
    input_ids = torch.from_numpy(scheduler_array)
    filled = last.fill(input_ids, np.array([1, 3, 4], dtype=np.int32), np.array([0, 5, 1], dtype=np.int32))
    assert filled.tolist() == [3, 8, 4, 7, 6]
    assert scheduler_array.tolist() == [3, -1, 4, -1, -1]  # the scheduler's batch array is left as it was
    assert last.fill(input_ids, np.empty(0, np.int32), np.empty(0, np.int32)) is input_ids


def test_a_host_copy_on_the_cpu_is_the_tensors_themselves():
    tokens = torch.tensor([1, 2, 3], dtype=torch.int32)
    logprobs = torch.tensor([[-0.5, -1.0]])
    copy = HostCopy([tokens, logprobs])
    assert copy.ready()
    ids, values = copy.numpy()
    assert ids.tolist() == [1, 2, 3] and values.tolist() == [[-0.5, -1.0]]
    tokens[0] = 9  # no copy was made: the arrays share the tensors' memory
    assert ids[0] == 9
