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


def apply_token_bitmask(logits: torch.Tensor, bitmask: TokenBitmask) -> None:
    """Sets, in place, the logits of tokens a constrained row does not allow to -inf."""
    num_rows, width = bitmask.words.shape
    shifts = torch.arange(BITS_PER_WORD, dtype=torch.int32, device=logits.device)
    # An arithmetic shift keeps bit 31's sign, but `& 1` reads each bit alone all the same.
    allowed = ((bitmask.words.unsqueeze(-1) >> shifts) & 1).view(num_rows, width * BITS_PER_WORD)
    allowed = allowed[:, : logits.shape[1]].bool()
    logits[bitmask.rows] = logits[bitmask.rows].masked_fill(~allowed, float("-inf"))
