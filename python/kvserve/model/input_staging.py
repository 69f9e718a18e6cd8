"""A step's input arrays to the device in one copy.

The scheduler's numpy arrays (token ids, positions, slot mapping, block tables, ...) are packed back to back
into one host buffer, pinned on CUDA so the copy is asynchronous, and moved with a single host-to-device copy;
the device tensors are views into the device buffer at the same offsets:

    host   | input_ids | pad | positions | pad | slot_mapping | block_tables | ... |   (pinned, ALIGNMENT-aligned)
              | one non_blocking copy_ of the used prefix
    device | input_ids | pad | positions | pad | slot_mapping | block_tables | ... |   -> torch views, no copies

Two buffers alternate: while the device may still be reading step N's host buffer, step N+1 fills the
other, after waiting for the copy recorded on it two steps earlier (on CUDA; a CPU copy is synchronous).
Buffers are preallocated for the largest step and grow (rarely: a larger extra array) when a step needs more.
The work per step is one numpy copy per array, whatever the number of requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Every array starts at a multiple of this many bytes: a byte view may be re-viewed as any element type
# (torch requires the offset to be a multiple of the element size), and 16-byte loads stay aligned.
ALIGNMENT = 16


def aligned(num_bytes: int) -> int:
    return -(-num_bytes // ALIGNMENT) * ALIGNMENT


def packed_layout(arrays: Sequence[np.ndarray]) -> tuple[list[int], int]:
    """Each array's byte offset in the packed buffer, and the bytes used."""
    offsets, end = [], 0
    for array in arrays:
        offsets.append(end)
        end += aligned(array.nbytes)
    return offsets, end


_TORCH_DTYPES = {
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.bool_): torch.bool,
}


class _Buffer:
    def __init__(self, capacity: int, device: torch.device) -> None:
        pin = device.type == "cuda"
        self.host = torch.empty(capacity, dtype=torch.uint8, pin_memory=pin)
        self.host_bytes = self.host.numpy()
        # On CPU the "device" tensors are views of the host buffer itself: there is nothing to copy.
        self.device = self.host if device.type == "cpu" else torch.empty(capacity, dtype=torch.uint8, device=device)
        self.copied: torch.cuda.Event | None = None


class InputStaging:
    """Moves a step's arrays to `device` through one of two alternating (pinned) host buffers."""

    def __init__(self, device: torch.device, capacity: int) -> None:
        self.device = device
        self._buffers = [_Buffer(aligned(capacity), device), _Buffer(aligned(capacity), device)]
        self._next = 0

    @property
    def capacity(self) -> int:
        return self._buffers[0].host.numel()

    def to_device(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Device tensors equal to `arrays` (same dtypes and shapes), valid until the step after next packs."""
        offsets, used = packed_layout(arrays)
        index = self._next
        self._next = 1 - index
        buffer = self._buffers[index]
        if buffer.copied is not None:
            buffer.copied.synchronize()  # the copy that last read this host buffer has finished
        if used > buffer.host.numel():
            buffer = self._buffers[index] = _Buffer(aligned(max(used, 2 * buffer.host.numel())), self.device)
        targets = []
        for array, offset in zip(arrays, offsets):
            target = buffer.host_bytes[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
            np.copyto(target, array, casting="no")
            targets.append(target)
        if buffer.device is buffer.host:
            # On CPU the tensors are the host buffer's numpy views: one from_numpy each is cheaper than
            # slicing and re-viewing the byte tensor (three torch calls an array, every step).
            return [torch.from_numpy(target) for target in targets]
        buffer.device[:used].copy_(buffer.host[:used], non_blocking=True)
        buffer.copied = torch.cuda.Event()
        buffer.copied.record(torch.cuda.current_stream(self.device))
        return [
            buffer.device[offset : offset + array.nbytes].view(_TORCH_DTYPES[array.dtype]).view(array.shape)
            for array, offset in zip(arrays, offsets)
        ]


def staging_capacity(max_num_tokens: int, max_num_seqs: int, max_blocks_per_seq: int) -> int:
    """Bytes of the largest decoder step `ModelRunner.prepare_inputs` stages: [T] input ids, positions and
    token seq lens (int32), [T] slot mapping (int64), [R, W] block tables, [R] seq lens, [R + 1] query starts
    (int32), each padded to the alignment."""
    t, r = max_num_tokens, max_num_seqs
    sizes = (4 * t, 4 * t, 8 * t, 4 * r * max_blocks_per_seq, 4 * r, 4 * (r + 1), 4 * t)
    return sum(aligned(size) for size in sizes)
