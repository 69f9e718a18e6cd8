"""The CUDA kernels (kvserve._kernels) behind the ops' signatures, registered for the CUDA device.

Each wrapper takes exactly the arguments of its reference op, checks that the inputs fit the kernel (dtype,
layout, head size) and otherwise runs the reference, so every input the reference accepts still works.
Outputs are new tensors (a torch custom op must not return its inputs); reshape_and_cache writes the cache it
declares as mutated. Kernels run on the current CUDA stream. `reference_only()` turns the kernels off, for
tests that compare the model with and without them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kvserve import _kernels
from kvserve.ops import reference

DTYPE_CODES = {torch.float32: _kernels.FLOAT32, torch.float16: _kernels.FLOAT16, torch.bfloat16: _kernels.BFLOAT16}
ATTENTION_HEAD_DIMS = (64, 128)

_enabled = True


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Within the block, CUDA tensors run the torch reference instead of the kernels."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def kernels_enabled() -> bool:
    """False within reference_only(): every wrapper (the GEMMs' too) then runs the reference."""
    return _enabled


def _fits(*tensors: torch.Tensor) -> bool:
    """Kernels on: all tensors on the current CUDA device, in one dtype that the kernels support."""
    first = tensors[0]
    return (
        kernels_enabled()
        and first.dtype in DTYPE_CODES
        and first.device.index == torch.cuda.current_device()
        and all(t.dtype == first.dtype and t.device == first.device for t in tensors)
    )


def _new(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every tensor the kernels write is allocated here: the tests replace it to poison outputs."""
    return torch.empty(shape, dtype=dtype, device=device)


def _stream(x: torch.Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream


def _token_rows(x: torch.Tensor) -> bool:
    """[T, heads, D] whose heads are contiguous within a token (a view into a fused qkv row is fine)."""
    return x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not (_fits(x, weight) and x.dim() >= 1 and weight.shape == x.shape[-1:]):
        return reference.rms_norm(x, weight, eps)
    hidden = x.shape[-1]
    if x.dim() == 2 and x.stride(1) == 1:
        x_stride = x.stride(0)
    else:
        x = x.contiguous()
        x_stride = hidden
    out = _new(x.shape, x.dtype, x.device)
    _kernels.rms_norm(
        DTYPE_CODES[x.dtype], out.data_ptr(), x.data_ptr(), weight.contiguous().data_ptr(), x.numel() // hidden,
        hidden, x_stride, eps, _stream(x),
    )  # fmt: skip
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if not (_fits(x, residual, weight) and x.shape == residual.shape and weight.shape == x.shape[-1:]):
        return reference.fused_add_rms_norm(x, residual, weight, eps)
    x, residual = x.contiguous(), residual.contiguous()
    hidden = x.shape[-1]
    out = _new(x.shape, x.dtype, x.device)
    residual_out = _new(x.shape, x.dtype, x.device)
    _kernels.fused_add_rms_norm(
        DTYPE_CODES[x.dtype], out.data_ptr(), residual_out.data_ptr(), x.data_ptr(), residual.data_ptr(),
        weight.contiguous().data_ptr(), x.numel() // hidden, hidden, eps, _stream(x),
    )  # fmt: skip
    return out, residual_out


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if not (_fits(x) and x.dim() >= 1 and x.shape[-1] % 2 == 0 and x.shape[-1] > 0):
        return reference.silu_and_mul(x)
    x = x.contiguous()
    d = x.shape[-1] // 2
    out = _new((*x.shape[:-1], d), x.dtype, x.device)
    _kernels.silu_and_mul(DTYPE_CODES[x.dtype], out.data_ptr(), x.data_ptr(), x.numel() // (2 * d), d, _stream(x))
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> torch.Tensor:
    out = _new(x.shape, x.dtype, x.device)
    tokens, heads, head_dim = x.shape
    _kernels.rotary_embedding(
        DTYPE_CODES[x.dtype], out.data_ptr(), x.data_ptr(), cos.data_ptr(), sin.data_ptr(), tokens, heads, head_dim,
        2 * cos.shape[1], x.stride(0), x.stride(1), out.stride(0), out.stride(1), is_neox, _stream(x),
    )  # fmt: skip
    return out


def _rotary_fits(query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    return (
        _fits(query, key)
        and query.dim() == 3
        and key.dim() == 3
        and query.stride(2) == 1
        and key.stride(2) == 1
        and query.shape[0] == key.shape[0] == cos.shape[0]
        and cos.dim() == 2
        and cos.shape == sin.shape
        and 0 < 2 * cos.shape[1] <= min(query.shape[2], key.shape[2])
        and cos.device == query.device == sin.device
    )


def _rotary(query, key, cos, sin, is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # The reference rotates in the activation dtype: cast cos/sin as it does (a no-op when the model already
    # passes them in that dtype).
    cos = cos.to(query.dtype).contiguous()
    sin = sin.to(query.dtype).contiguous()
    return _rotate(query, cos, sin, is_neox), _rotate(key, cos, sin, is_neox)


def rotary_embedding(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if not _rotary_fits(query, key, cos, sin):
        return reference.rotary_embedding(query, key, cos, sin)
    return _rotary(query, key, cos, sin, is_neox=True)


def rotary_embedding_gptj(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if not _rotary_fits(query, key, cos, sin):
        return reference.rotary_embedding_gptj(query, key, cos, sin)
    return _rotary(query, key, cos, sin, is_neox=False)


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    fits = (
        _fits(kv_cache, key, value)
        and _token_rows(key)
        and _token_rows(value)
        and kv_cache.dim() == 5
        and kv_cache.is_contiguous()
        and key.shape == value.shape == (slot_mapping.shape[0], *kv_cache.shape[3:])
        and slot_mapping.device == kv_cache.device
    )
    if not fits:
        return reference.reshape_and_cache(key, value, kv_cache, slot_mapping)
    slot_mapping = slot_mapping.to(torch.int64).contiguous()
    num_slots = kv_cache.shape[1] * kv_cache.shape[2]
    _kernels.reshape_and_cache(
        DTYPE_CODES[kv_cache.dtype], kv_cache.data_ptr(), key.data_ptr(), value.data_ptr(), slot_mapping.data_ptr(),
        key.shape[0], num_slots, kv_cache.shape[3] * kv_cache.shape[4], key.stride(0), value.stride(0),
        _stream(kv_cache),
    )  # fmt: skip
    return None


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
    """max_seq_len must be at least every seq_lens[r]: it sizes the splits (the reference ignores it)."""
    fits = (
        _fits(query, kv_cache)
        and query.dim() == 3
        and kv_cache.dim() == 5
        and kv_cache.is_contiguous()
        and query.shape[2] == kv_cache.shape[4] in ATTENTION_HEAD_DIMS
        and query.shape[1] % kv_cache.shape[3] == 0
        and query.shape[0] > 0
        and max_query_len >= 1
        and max_seq_len >= max_query_len
    )
    if not fits:
        return reference.paged_attention(
            query, kv_cache, block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len, scale, sliding_window
        )
    # The kernel loads 16 bytes of a head at a time (8 elements at most).
    if query.stride(2) != 1 or query.stride(1) % 8 or query.stride(0) % 8 or query.data_ptr() % 16:
        query = query.clone(memory_format=torch.contiguous_format)
    block_tables = block_tables.to(torch.int32).contiguous()
    seq_lens = seq_lens.to(torch.int32).contiguous()
    query_start_loc = query_start_loc.to(torch.int32).contiguous()
    tokens, heads, head_dim = query.shape
    reqs = seq_lens.shape[0]
    num_blocks, block_size, kv_heads = kv_cache.shape[1:4]
    workspace_bytes = _kernels.paged_attention_workspace_bytes(
        tokens, reqs, heads, kv_heads, head_dim, max_query_len, max_seq_len
    )
    workspace = _new((workspace_bytes,), torch.uint8, query.device)
    out = _new(query.shape, query.dtype, query.device)
    _kernels.paged_attention(
        DTYPE_CODES[query.dtype], out.data_ptr(), query.data_ptr(), kv_cache.data_ptr(), block_tables.data_ptr(),
        seq_lens.data_ptr(), query_start_loc.data_ptr(), workspace.data_ptr(), tokens, reqs, heads, kv_heads, head_dim,
        num_blocks, block_size, block_tables.shape[1], query.stride(0), query.stride(1), max_query_len, max_seq_len,
        scale, sliding_window, _stream(query),
    )  # fmt: skip
    return out


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
    """Decode rows (one query per request) see their request's whole context, so the paged kernel serves
    non-causal cross-attention as is; a request's first step (several query rows) takes the reference."""
    if max_query_len != 1:
        return reference.cross_attention(
            query, kv_cache, block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len, scale
        )
    return paged_attention(query, kv_cache, block_tables, seq_lens, query_start_loc, 1, max_seq_len, scale, 0)


KERNELS = {
    "rms_norm": rms_norm,
    "fused_add_rms_norm": fused_add_rms_norm,
    "silu_and_mul": silu_and_mul,
    "rotary_embedding": rotary_embedding,
    "rotary_embedding_gptj": rotary_embedding_gptj,
    "reshape_and_cache": reshape_and_cache,
    "paged_attention": paged_attention,
    "cross_attention": cross_attention,
}
