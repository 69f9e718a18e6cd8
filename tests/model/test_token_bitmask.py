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


def test_dense_random_masks_match_unpacked_bits_in_every_dtype():
    rng = np.random.default_rng(0)
    vocab = 1000
    words = rng.integers(-(2**31), 2**31, size=(4, bitmask_width(vocab)), dtype=np.int64).astype(np.int32)
    allowed = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :vocab].astype(bool)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        logits = torch.randn(6, vocab).to(dtype)
        before = logits.clone()
        apply_token_bitmask(logits, TokenBitmask(torch.tensor([0, 2, 3, 5]), torch.from_numpy(words)))
        expected = before.clone()
        expected[[0, 2, 3, 5]] = before[[0, 2, 3, 5]].masked_fill(~torch.from_numpy(allowed), float("-inf"))
        assert torch.equal(logits, expected), dtype
