"""Sampled token ids on both sides of the device boundary, for overlapped (async) scheduling.

With async scheduling the scheduler sends step N+1 before step N's sampled ids reach the host, so a decode
row of N+1 has a placeholder input (ExecuteBatch.placeholder_indices). `LastSampled` keeps, on the device and
by persistent-batch slot, the token each slot sampled last; the next step gathers its placeholders from it,
so the ids never make a round trip through the host between two steps. `HostCopy` is the host copy of a
step's outputs: asynchronous on CUDA (into pinned memory, with an event), waited for only when read.
"""

from __future__ import annotations

import numpy as np
import torch


class LastSampled:
    """On the CPU the store's gathers and scatters are numpy's on the tensor's memory: torch's indexing ops on
    one-element tensors cost ~0.3 ms each in the runner between steps against 4 µs alone (one stream of the
    default model: `fill` 0.74 ms a step; RESULTS.md, #14, fifth session)."""

    def __init__(self, device: torch.device, capacity: int = 16) -> None:
        self.device = device
        self.tokens = torch.zeros(capacity, dtype=torch.int32, device=device)  # [capacity] by slot

    def record(self, slots: np.ndarray, token_ids: torch.Tensor) -> None:
        """token_ids [S] int32 on the device, sampled by the rows of `slots` (unique within a step)."""
        needed = int(slots.max()) + 1
        if needed > self.tokens.shape[0]:
            extra = max(needed, 2 * self.tokens.shape[0]) - self.tokens.shape[0]
            self.tokens = torch.cat([self.tokens, self.tokens.new_zeros(extra)])
        if self.device.type == "cpu":
            self.tokens.numpy()[slots] = token_ids.numpy()
        else:
            self.tokens[self._index(slots)] = token_ids

    def fill(self, input_ids: torch.Tensor, indices: np.ndarray, slots: np.ndarray) -> torch.Tensor:
        """input_ids with each placeholder position indices[i] set to the last token of slots[i]. Out of
        place: on the CPU input_ids shares memory with the scheduler's batch arrays."""
        if len(indices) == 0:
            return input_ids
        if self.device.type == "cpu":
            filled = input_ids.numpy().copy()
            filled[indices] = self.tokens.numpy()[slots]
            return torch.from_numpy(filled)
        values = self.tokens[self._index(slots)].to(input_ids.dtype)
        return input_ids.index_put((self._index(indices),), values)

    def _index(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64)).to(self.device, non_blocking=True)


class HostCopy:
    """The host copy of a step's output tensors (sampled ids, logprobs), started at construction: on CUDA into
    pinned memory behind the step's work on the current stream, with one event; waited for only when read."""

    __slots__ = ("_host", "_event")

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self._event: torch.cuda.Event | None = None
        if all(t.device.type == "cpu" for t in tensors):
            self._host = tensors  # the copy would be the tensors themselves
            return
        self._host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, tensor in zip(self._host, tensors):
            host.copy_(tensor, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def ready(self) -> bool:
        """Whether numpy() returns without waiting."""
        return self._event is None or self._event.query()

    def numpy(self) -> list[np.ndarray]:
        if self._event is not None:
            self._event.synchronize()
        return [t.numpy() for t in self._host]
