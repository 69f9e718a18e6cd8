"""Packed token bitmasks: which tokens a constrained row may sample.

The layout is xgrammar's, so a grammar backend can fill rows without this code changing: int32 words
[rows, ceil(V / 32)], where bit i of word j allows token 32 * j + i. Only constrained rows are carried; an
unconstrained row is simply absent, which costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BITS_PER_WORD = 32


def bitmask_width(vocab_size: int) -> int:
    return -(-vocab_size // BITS_PER_WORD)


@dataclass(frozen=True, slots=True)
class TokenBitmask:
    rows: torch.Tensor  # [M] int64: rows of the step's logits that are constrained
    words: torch.Tensor  # [M, ceil(V / 32)] int32, on the logits' device


def pack_allowed_ids(allowed: list[np.ndarray], vocab_size: int) -> np.ndarray:
    """One bitmask row per array of allowed token ids (each id < vocab_size): [len(allowed), W] int32."""
    words = np.zeros((len(allowed), bitmask_width(vocab_size)), dtype=np.uint32)
    ids = np.concatenate(allowed).astype(np.int64)
    rows = np.repeat(np.arange(len(allowed)), [len(a) for a in allowed])
    # bitwise_or.at, not assignment: several ids of one row share a word.
    np.bitwise_or.at(words, (rows, ids // BITS_PER_WORD), np.left_shift(1, ids % BITS_PER_WORD).astype(np.uint32))
    return words.view(np.int32)


# Per (device, dtype): row b holds, for bit i of byte b, 0 where the bit is set (allowed) and -inf where not.
_BYTE_BIASES: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _byte_biases(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (device, dtype)
    if key not in _BYTE_BIASES:
        bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
        _BYTE_BIASES[key] = torch.zeros(256, 8).masked_fill(bits == 0, float("-inf")).to(device, dtype)
    return _BYTE_BIASES[key]


def apply_token_bitmask(logits: torch.Tensor, bitmask: TokenBitmask) -> None:
    """Sets, in place, the logits of tokens a constrained row does not allow to -inf.

    Each mask byte picks its 8 biases (0 or -inf) from a 256-row table, and the biases are added: a gather and an
    add, with no branch on the mask's bits. Unpacking bits and masked_fill run several times slower on CPUs, where
    a grammar's masks are dense and irregular (measured: benchmarks/bench_structured.py).
    """
    num_rows = bitmask.words.shape[0]
    # The words are little-endian int32 (as on every platform torch runs on): byte k of a row holds tokens 8k..8k+7.
    byte_ids = bitmask.words.contiguous().view(torch.uint8).long()
    biases = _byte_biases(logits.device, logits.dtype)[byte_ids].view(num_rows, -1)[:, : logits.shape[1]]
    logits.index_add_(0, bitmask.rows, biases)
