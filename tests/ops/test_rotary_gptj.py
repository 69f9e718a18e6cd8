"""The GPT-J-style (interleaved) rotary reference: a NeoX-style rotation of the de-interleaved channels."""

from __future__ import annotations

import pytest
import torch

from kvserve import ops
from kvserve.ops import reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("head_dim", "rot_dim"), [(16, 16), (24, 8)])
def test_gptj_is_neox_on_deinterleaved_channels(dtype, head_dim, rot_dim):
    torch.manual_seed(0)
    tokens, heads, kv_heads = 5, 4, 2
    query = torch.randn(tokens, heads, head_dim, dtype=dtype)
    key = torch.randn(tokens, kv_heads, head_dim, dtype=dtype)
    angles = torch.rand(tokens, rot_dim // 2) * 50
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    # Pair i is channels (2i, 2i + 1) in GPT-J, (i, i + rot/2) in NeoX: this order maps one onto the other.
    order = torch.cat([torch.arange(0, rot_dim, 2), torch.arange(1, rot_dim, 2), torch.arange(rot_dim, head_dim)])
    neox_q, neox_k = reference.rotary_embedding(query[..., order], key[..., order], cos, sin)
    gptj_q, gptj_k = ops.rotary_embedding_gptj(query, key, cos, sin)
    # The same products and sums in the same dtype: bit-exact.
    torch.testing.assert_close(gptj_q[..., order], neox_q, rtol=0, atol=0)
    torch.testing.assert_close(gptj_k[..., order], neox_k, rtol=0, atol=0)
    assert gptj_q[..., rot_dim:].equal(query[..., rot_dim:])
