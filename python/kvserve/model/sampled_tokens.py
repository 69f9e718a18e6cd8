"""Sampled token ids on both sides of the device boundary, for overlapped (async) scheduling.

With async scheduling the scheduler sends step N+1 before step N's sampled ids reach the host, so a decode
row of N+1 has a placeholder input (ExecuteBatch.placeholder_indices). `LastSampled` keeps, on the device and
by persistent-batch slot, the token each slot sampled last; the next step gathers its placeholders from it,
so the ids never make a round trip through the host between two steps. `HostTokens` is the host copy of a
step's ids: asynchronous on CUDA (into pinned memory, with an event), waited for only when read.
"""

from __future__ import annotations

import numpy as np
import torch


class LastSampled:
    def __init__(self, device: torch.device, capacity: int = 16) -> None:
        self.device = device
        self.tokens = torch.zeros(capacity, dtype=torch.int32, device=device)  # [capacity] by slot

    def record(self, slots: np.ndarray, token_ids: torch.Tensor) -> None:
        """token_ids [S] int32 on the device, sampled by the rows of `slots` (unique within a step)."""
        needed = int(slots.max()) + 1
        if needed > self.tokens.shape[0]:
            extra = max(needed, 2 * self.tokens.shape[0]) - self.tokens.shape[0]
            self.tokens = torch.cat([self.tokens, self.tokens.new_zeros(extra)])
        self.tokens[self._index(slots)] = token_ids

    def fill(self, input_ids: torch.Tensor, indices: np.ndarray, slots: np.ndarray) -> torch.Tensor:
        """input_ids with each placeholder position indices[i] set to the last token of slots[i]. Out of
        place: on the CPU input_ids shares memory with the scheduler's batch arrays."""
        if len(indices) == 0:
            return input_ids
        values = self.tokens[self._index(slots)].to(input_ids.dtype)
        return input_ids.index_put((self._index(indices),), values)

    def _index(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64)).to(self.device, non_blocking=True)


class HostTokens:
    """The host copy of a step's sampled ids [S] int32, started at construction."""

    __slots__ = ("_host", "_event")

    def __init__(self, token_ids: torch.Tensor) -> None:
        self._event: torch.cuda.Event | None = None
        if token_ids.device.type == "cpu":
            self._host = token_ids  # the copy would be the tensor itself
            return
        self._host = torch.empty(token_ids.shape, dtype=token_ids.dtype, pin_memory=True)
        self._host.copy_(token_ids, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def numpy(self) -> np.ndarray:
        if self._event is not None:
            self._event.synchronize()
        return self._host.numpy()
