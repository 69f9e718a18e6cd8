"""The packed token bitmask: xgrammar's layout, bit 31 included, a vocabulary that is not a multiple of 32."""

from __future__ import annotations

import numpy as np
import torch

from kvserve.model.token_bitmask import TokenBitmask, apply_token_bitmask, bitmask_width, pack_allowed_ids


def test_layout_is_bit_i_of_word_j_for_token_32j_plus_i():
    words = pack_allowed_ids([np.array([0, 31, 32, 69]), np.array([5])], vocab_size=70)
    assert words.dtype == np.int32 and words.shape == (2, bitmask_width(70)) == (2, 3)
    assert words[0].view(np.uint32).tolist() == [1 | 1 << 31, 1, 1 << 5]
    assert words[1].view(np.uint32).tolist() == [1 << 5, 0, 0]


def test_only_constrained_rows_change():
    logits = torch.arange(3 * 70, dtype=torch.float32).view(3, 70)
    before = logits.clone()
    words = pack_allowed_ids([np.array([0, 31, 32, 69])], vocab_size=70)
    apply_token_bitmask(logits, TokenBitmask(torch.tensor([1]), torch.from_numpy(words)))
    assert torch.equal(logits[[0, 2]], before[[0, 2]])
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [0, 31, 32, 69]
    assert logits[1, [0, 31, 32, 69]].tolist() == before[1, [0, 31, 32, 69]].tolist()
