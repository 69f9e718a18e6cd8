"""Pure-torch implementations of kvserve's ops: the CPU path and the oracle for the CUDA kernels.

Shapes: T tokens in the step, R requests, H query heads, KVH key/value heads, D head dim, NB blocks of BS
slots. A layer's KV cache is one tensor [2, NB, BS, KVH, D] (keys, then values).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [..., hidden]. Normalises in float32 and casts back before the weight, as transformers does."""
    x32 = x.float()
    variance = x32.pow(2).mean(-1, keepdim=True)
    return weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rms_norm(x + residual), x + residual)."""
    residual = x + residual
    return rms_norm(residual, weight, eps), residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2 * d] holding gate then up; returns silu(gate) * up: [..., d]."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def rotary_embedding(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-NeoX-style rotation of query [T, H, D] and key [T, KVH, D] by cos/sin [T, rot_dim / 2] (from
    `RotaryEmbedding.cos_sin`); returns rotated copies in the inputs' dtype."""
    cos = cos.to(query.dtype).unsqueeze(-2)
    sin = sin.to(query.dtype).unsqueeze(-2)
    return _rotate(query, cos, sin), _rotate(key, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, num_heads, head_dim]; cos, sin: [T, 1, rotary_dim // 2] in x's dtype."""
    half = cos.shape[-1]
    rotary_dim = 2 * half
    if x.shape[-1] < rotary_dim:
        raise ValueError(f"head_dim {x.shape[-1]} is smaller than rotary_dim {rotary_dim}")
    x1 = x[..., :half]
    x2 = x[..., half:rotary_dim]
    out = torch.empty_like(x)
    out1 = out[..., :half]
    out2 = out[..., half:rotary_dim]
    # Separate roundings in x's dtype, as transformers' `x * cos + rotate_half(x) * sin`: its rotate_half negates
    # x2 (exact), and a + (-b) rounds like a - b. addcmul could fuse the multiply-add and round differently.
    torch.mul(x1, cos, out=out1)
    out1.sub_(x2 * sin)
    torch.mul(x2, cos, out=out2)
    out2.add_(x1 * sin)
    if rotary_dim < x.shape[-1]:
        out[..., rotary_dim:] = x[..., rotary_dim:]
    return out


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Writes key/value [T, KVH, D] into kv_cache [2, NB, BS, KVH, D] at slot_mapping [T]."""
    num_slots = kv_cache.shape[1] * kv_cache.shape[2]
    flat = kv_cache.view(2, num_slots, kv_cache.shape[3], kv_cache.shape[4])
    flat[0].index_copy_(0, slot_mapping, key.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, value.to(kv_cache.dtype))


def _gather_blocks(kv_cache: torch.Tensor, block_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """kv_cache [2, NB, BS, KVH, D], block_ids [...] -> [2, *block_ids.shape, BS, KVH, D] in `dtype` (the
    queries' dtype: a cache stored narrower than the model's activations is widened for the math).

    index_select over a flat view copies whole blocks; advanced indexing is ~5x slower on CPU here.
    """
    flat = kv_cache.view(2, kv_cache.shape[1], -1)
    picked = flat.index_select(1, block_ids.reshape(-1).to(torch.int64))
    return picked.view(2, *block_ids.shape, *kv_cache.shape[2:]).to(dtype)


def _visible_keys(query_pos: torch.Tensor, key_pos: torch.Tensor, seq_len: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean mask [..., q, k]: causal, inside the sequence, and within the sliding window if any."""
    mask = (key_pos <= query_pos) & (key_pos < seq_len)
    if window > 0:
        mask &= key_pos > query_pos - window
    return mask


def paged_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
    sliding_window: int = 0,
) -> torch.Tensor:
    """Causal attention of query [T, H, D] over each request's cached keys and values.

    Request r owns query rows query_start_loc[r]:query_start_loc[r+1], the last tokens of its
    seq_lens[r]-token context, whose KV (this step's included) is in the blocks block_tables[r].
    Returns [T, H, D]. Single-token rows (decodes) run as one padded batch; longer rows one by one.
    """
    return split_attention(
        query, kv_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, decode_attention
    )


DecodeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int], torch.Tensor]
# (out, query, kv_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window): fills the rows of out
# that belong to requests of more than one query row.
ChunksFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int], None
]


def split_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    scale: float,
    sliding_window: int,
    decode: DecodeFn,
    chunks: ChunksFn | None = None,
) -> torch.Tensor:
    """Decode rows (one query token) in one batched call of `decode`; the rows of longer requests by `chunks`
    (in one call, into `out`), or request by request in torch."""
    if query.shape[0] == 0:
        return torch.empty_like(query)
    if max_query_len == 1:
        return decode(query, kv_cache, block_tables, seq_lens, scale, sliding_window)
    out = torch.empty_like(query)
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    single = torch.nonzero(q_lens == 1).flatten()
    if len(single):
        rows = query_start_loc[single].long()
        out[rows] = decode(query[rows], kv_cache, block_tables[single], seq_lens[single], scale, sliding_window)
    if chunks is not None:
        chunks(out, query, kv_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window)
        return out
    starts, lens, seqs = query_start_loc[:-1].tolist(), q_lens.tolist(), seq_lens.tolist()
    for r, (start, q_len, seq_len) in enumerate(zip(starts, lens, seqs)):
        if q_len > 1:
            out[start : start + q_len] = _attend_chunk(
                query[start : start + q_len], kv_cache, block_tables[r], seq_len, scale, sliding_window
            )
    return out


def _attend_chunk(
    query: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, scale: float, window: int
) -> torch.Tensor:
    """query [q, H, D]: the last q tokens of a seq_len-token context."""
    q_len, num_heads, head_dim = query.shape
    block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    group = num_heads // num_kv_heads
    num_blocks = -(-seq_len // block_size)
    blocks = _gather_blocks(kv_cache, block_table[:num_blocks], query.dtype)  # [2, n, BS, KVH, D]
    kv = blocks.reshape(2, num_blocks * block_size, num_kv_heads, head_dim)[:, :seq_len]
    k = kv[0].transpose(0, 1)  # [KVH, L, D]
    v = kv[1].transpose(0, 1)
    # Query heads of one KV head share its keys: fold the group into the query-length axis.
    q = (
        query.view(q_len, num_kv_heads, group, head_dim)
        .permute(1, 2, 0, 3)
        .reshape(num_kv_heads, group * q_len, head_dim)
    )
    context = seq_len - q_len
    if context == 0 and window <= 0:
        o = F.scaled_dot_product_attention(
            q.view(num_heads, q_len, head_dim), k, v, is_causal=True, scale=scale, enable_gqa=True
        )
    else:
        query_pos = torch.arange(context, seq_len, device=query.device).repeat(group).view(-1, 1)
        key_pos = torch.arange(seq_len, device=query.device).view(1, -1)
        mask = _visible_keys(query_pos, key_pos, torch.tensor(seq_len, device=query.device), window)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return o.view(num_kv_heads, group, q_len, head_dim).permute(2, 0, 1, 3).reshape(q_len, num_heads, head_dim)


def decode_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int,
) -> torch.Tensor:
    """One query token per request: query [R, H, D], its context of seq_lens[r] tokens. Returns [R, H, D]."""
    num_reqs, num_heads, head_dim = query.shape
    block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    group = num_heads // num_kv_heads
    # The table's width (the step's longest context, from the scheduler) bounds the blocks to read without
    # reading seq_lens back from the device; keys past each row's seq_len are masked below.
    num_blocks = block_tables.shape[1]
    blocks = _gather_blocks(kv_cache, block_tables, query.dtype)  # [2, R, n, BS, KVH, D]
    kv = blocks.reshape(2, num_reqs, num_blocks * block_size, num_kv_heads, head_dim)
    k = kv[0].transpose(1, 2)  # [R, KVH, L, D]
    v = kv[1].transpose(1, 2)
    q = query.reshape(num_reqs, num_kv_heads, group, head_dim)
    key_pos = torch.arange(num_blocks * block_size, device=query.device).view(1, 1, 1, -1)
    seq = seq_lens.view(-1, 1, 1, 1)
    mask = _visible_keys(seq - 1, key_pos, seq, sliding_window)  # [R, 1, 1, L]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return o.reshape(num_reqs, num_heads, head_dim)


def rotary_embedding_gptj(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-J-style rotation (interleaved pairs (2i, 2i + 1)) of query [T, H, D] and key [T, KVH, D] by cos/sin
    [T, rot_dim / 2]; channels past rot_dim pass through. Same roundings as the NeoX style, in x's dtype."""

    def rotate(x: torch.Tensor) -> torch.Tensor:
        half = cos.shape[-1]
        c = cos.to(x.dtype).unsqueeze(-2)
        s = sin.to(x.dtype).unsqueeze(-2)
        out = x.clone()
        x1 = x[..., 0 : 2 * half : 2]
        x2 = x[..., 1 : 2 * half : 2]
        out[..., 0 : 2 * half : 2] = x1 * c - x2 * s
        out[..., 1 : 2 * half : 2] = x2 * c + x1 * s
        return out

    return rotate(query), rotate(key)


def cross_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
) -> torch.Tensor:
    """Non-causal attention of query [T, H, D] over each request's encoder keys and values (encoder-decoder
    cross-attention): request r's rows query_start_loc[r]:query_start_loc[r+1] all see the seq_lens[r] >= 1
    positions held in the blocks block_tables[r]; max_seq_len is max(seq_lens). Returns [T, H, D].

    All requests run as one padded batch: [R, max_query_len] queries against [R, max_seq_len] keys.
    """
    num_tokens, num_heads, head_dim = query.shape
    num_reqs = block_tables.shape[0]
    block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    max_len = max_seq_len
    num_blocks = -(-max_len // block_size)
    blocks = _gather_blocks(kv_cache, block_tables[:, :num_blocks], query.dtype)  # [2, R, n, BS, KVH, D]
    kv = blocks.reshape(2, num_reqs, num_blocks * block_size, num_kv_heads, head_dim)[:, :, :max_len]
    k = kv[0].transpose(1, 2)  # [R, KVH, L, D]
    v = kv[1].transpose(1, 2)
    mask = None
    if int(seq_lens.min()) < max_len:
        mask = (torch.arange(max_len, device=query.device).view(1, 1, 1, -1) < seq_lens.view(-1, 1, 1, 1)).expand(
            -1, 1, max_query_len, -1
        )
    gqa = num_heads != num_kv_heads
    if num_tokens == num_reqs:  # one query row per request (decodes): no padding
        q = query.view(num_reqs, num_heads, 1, head_dim)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        return o.view(num_tokens, num_heads, head_dim)
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    req_of_token = torch.repeat_interleave(torch.arange(num_reqs, device=query.device), q_lens)
    offset = torch.arange(num_tokens, device=query.device) - query_start_loc[req_of_token]
    padded = query.new_zeros(num_reqs, max_query_len, num_heads, head_dim)
    padded[req_of_token, offset] = query
    o = F.scaled_dot_product_attention(padded.transpose(1, 2), k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return o.transpose(1, 2)[req_of_token, offset]
