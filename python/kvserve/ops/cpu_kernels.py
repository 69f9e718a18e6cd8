"""The C++ CPU kernels (kvserve._core.cpu, float32 math) behind the ops' signatures.

Each wrapper checks that its inputs fit the kernel (CPU; float32 activations, or bfloat16 ones for the norms
and the activation, which round as torch's ops do; for the cache write and attention, keys, values and
queries of any of the cache's types; a KV cache of float32, float16 or bfloat16; the layouts it reads) and
otherwise returns NotImplemented, so the caller falls back to the torch reference. The kernels write into
tensors allocated here; rotary_embedding rotates in place. The attention kernels split their work across
torch's thread count, on the OpenMP runtime torch's ops use.
"""

from __future__ import annotations

import torch

from kvserve import _core
from kvserve.ops import reference

_kernels = _core.cpu


_FLOAT32 = torch.float32
_BFLOAT16 = torch.bfloat16
# The KV cache element types the kernels read and write (kvserve::cpu::CacheDtype).
CACHE_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _fits(*tensors: torch.Tensor) -> bool:
    # A plain loop over cheap attributes: these checks run ~20 times a layer, and `t.device` builds an
    # object each time (a decode step of a small model is a few hundred microseconds in all).
    for t in tensors:
        if t.dtype is not _FLOAT32 or not t.is_cpu:
            return False
    return True


def _fits_query(query: torch.Tensor) -> bool:
    """Attention queries may also be 16-bit: the kernel reads them widened to float32 (exactly) and its output
    is rounded back to their type once, the way torch's attention computes half-precision inputs."""
    return query.dtype in CACHE_DTYPES and query.is_cpu


def fits_cache(kv_cache: torch.Tensor) -> bool:
    return kv_cache.dtype in CACHE_DTYPES and kv_cache.is_cpu and kv_cache.is_contiguous()


def _activations(*tensors: torch.Tensor) -> torch.dtype | None:
    """The norms' and activation's kernel type: float32 or bfloat16 when every tensor is of it, on the CPU and
    contiguous; else None. (bfloat16 kernels round where torch's ops round; float16 takes the reference.)"""
    dtype = tensors[0].dtype
    if dtype is not _FLOAT32 and dtype is not _BFLOAT16:
        return None
    for t in tensors:
        if t.dtype is not dtype or not t.is_cpu or not t.is_contiguous():
            return None
    return dtype


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float):
    dtype = _activations(x, weight)
    if dtype is None:
        return NotImplemented
    hidden = x.shape[-1]
    out = torch.empty_like(x)
    args = (out.data_ptr(), x.data_ptr(), weight.data_ptr(), x.numel() // hidden, hidden, hidden, eps)
    norm = _kernels.rms_norm if dtype is _FLOAT32 else _kernels.rms_norm_bf16
    norm(*args, torch.get_num_threads())
    return out


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    dtype = _activations(x, residual, weight)
    if dtype is None:
        return NotImplemented
    hidden = x.shape[-1]
    out = torch.empty_like(x)
    # The op returns a new residual (callers may still hold the old one): the kernel writes the sum there.
    residual_out = torch.empty_like(residual)
    args = (out.data_ptr(), residual_out.data_ptr(), residual.data_ptr(), x.data_ptr(), weight.data_ptr())
    norm = _kernels.fused_add_rms_norm if dtype is _FLOAT32 else _kernels.fused_add_rms_norm_bf16
    norm(*args, x.numel() // hidden, hidden, eps, torch.get_num_threads())
    return out, residual_out


def silu_and_mul(x: torch.Tensor):
    dtype = _activations(x)
    if dtype is None:
        return NotImplemented
    d = x.shape[-1] // 2
    out = torch.empty(*x.shape[:-1], d, dtype=x.dtype)
    silu = _kernels.silu_and_mul if dtype is _FLOAT32 else _kernels.silu_and_mul_bf16
    silu(out.data_ptr(), x.data_ptr(), x.numel() // (2 * d), d, torch.get_num_threads())
    return out


def _token_rows(x: torch.Tensor) -> bool:
    """[T, heads, D] whose heads are contiguous within a token (a view into a fused qkv row is fine)."""
    return x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]


def rotary_embedding(query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    if not (_fits(query, key, cos, sin) and _token_rows(query) and _token_rows(key) and cos.is_contiguous()):
        return NotImplemented
    if not sin.is_contiguous() or query.shape[0] != cos.shape[0]:
        return NotImplemented
    tokens, rot_dim = cos.shape[0], 2 * cos.shape[1]
    for x in (query, key):
        _kernels.rotary_neox(
            x.data_ptr(), cos.data_ptr(), sin.data_ptr(), tokens, x.shape[1], x.shape[2], rot_dim, x.stride(0)
        )
    return query, key


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor):
    # Keys and values of any cache type (a half-precision model's): copied as they are into a cache of their
    # type, else converted as torch's `.to(cache dtype)` does.
    input_dtype = CACHE_DTYPES.get(key.dtype)
    if input_dtype is None or value.dtype is not key.dtype or not (key.is_cpu and value.is_cpu):
        return NotImplemented
    if not (fits_cache(kv_cache) and _token_rows(key) and _token_rows(value)):
        return NotImplemented
    if slot_mapping.dtype != torch.int64 or not slot_mapping.is_contiguous():
        return NotImplemented
    num_slots = kv_cache.shape[1] * kv_cache.shape[2]
    row = kv_cache.shape[3] * kv_cache.shape[4]
    _kernels.reshape_and_cache(
        kv_cache.data_ptr(), CACHE_DTYPES[kv_cache.dtype], key.data_ptr(), value.data_ptr(), input_dtype,
        slot_mapping.data_ptr(), key.shape[0], num_slots, row, key.stride(0), value.stride(0),
    )  # fmt: skip
    return None


def _decode(
    query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
    sliding_window: int,
) -> torch.Tensor:  # fmt: skip
    dtype = query.dtype
    query = query.to(_FLOAT32).contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    seq_lens = seq_lens.to(torch.int32).contiguous()
    out = torch.empty_like(query)
    num_reqs, num_heads, head_dim = query.shape
    _kernels.paged_attention_decode(
        out.data_ptr(), query.data_ptr(), kv_cache.data_ptr(), CACHE_DTYPES[kv_cache.dtype], block_tables.data_ptr(),
        seq_lens.data_ptr(), num_reqs, num_heads, kv_cache.shape[3], head_dim, kv_cache.shape[1], kv_cache.shape[2],
        block_tables.shape[1], num_heads * head_dim, scale, sliding_window, torch.get_num_threads(),
    )  # fmt: skip
    return out.to(dtype)


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
):
    if not (_fits_query(query) and fits_cache(kv_cache)):
        return NotImplemented
    chunks = _prefill if _kernels.paged_attention_prefill_fits(query.shape[2]) else None
    return reference.split_attention(
        query, kv_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, _decode,
        chunks,
    )  # fmt: skip


def _prefill(
    out: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, query_start_loc: torch.Tensor, scale: float, sliding_window: int,
) -> None:  # fmt: skip
    """The rows of out of requests with more than one query row, by the C++ prefill kernel."""
    result = out if out.dtype is _FLOAT32 else torch.empty(out.shape)
    query = query.to(_FLOAT32)
    if not _token_rows(query):
        query = query.contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    seq_lens = seq_lens.to(torch.int32).contiguous()
    query_start_loc = query_start_loc.to(torch.int32).contiguous()
    _kernels.paged_attention_prefill(
        result.data_ptr(), query.data_ptr(), kv_cache.data_ptr(), CACHE_DTYPES[kv_cache.dtype],
        block_tables.data_ptr(), seq_lens.data_ptr(), query_start_loc.data_ptr(), seq_lens.shape[0], query.shape[1],
        kv_cache.shape[3], query.shape[2], kv_cache.shape[1], kv_cache.shape[2], block_tables.shape[1],
        query.stride(0), scale, sliding_window, torch.get_num_threads(),
    )  # fmt: skip
    if result is not out:  # a 16-bit output: only the kernel's rows, rounded once
        q_lens = query_start_loc.diff()
        rows = torch.zeros(out.shape[0], dtype=torch.bool)
        rows[: int(query_start_loc[-1])] = torch.repeat_interleave(q_lens > 1, q_lens)
        out[rows] = result[rows].to(out.dtype)


def cross_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
):
    # One query row per request (decode steps): a decode row sees its whole context, so the decode kernel
    # is the non-causal cross-attention too, reading the cross blocks in place. Longer rows take the reference.
    if max_query_len != 1 or not (_fits_query(query) and fits_cache(kv_cache)):
        return NotImplemented
    return _decode(query, kv_cache, block_tables, seq_lens, scale, 0)


def attention_block(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    q_norm: torch.Tensor | None,
    k_norm: torch.Tensor | None,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
    sliding_window: int,
):
    """ops.attention_block in one C++ call for a decode step (norms, rotary, cache write, attention), in two
    otherwise (prepare_qkv, then paged_attention). qkv is rotated in place, as the unfused ops do."""
    if not (_fits(qkv, cos, sin) and fits_cache(kv_cache) and qkv.stride(1) == 1):
        return NotImplemented
    if not (cos.is_contiguous() and sin.is_contiguous()):
        return NotImplemented
    if q_norm is not None and not (_fits(q_norm, k_norm) and q_norm.is_contiguous() and k_norm.is_contiguous()):
        return NotImplemented
    if slot_mapping.dtype != torch.int64 or not slot_mapping.is_contiguous():
        return NotImplemented
    tokens, q_size = qkv.shape[0], num_heads * head_dim
    if tokens == 0 or cos.shape[0] != tokens:
        return NotImplemented
    q_norm_ptr, k_norm_ptr = (0 if w is None else w.data_ptr() for w in (q_norm, k_norm))
    num_blocks, block_size = kv_cache.shape[1], kv_cache.shape[2]
    rot_dim, cache_dtype = 2 * cos.shape[1], CACHE_DTYPES[kv_cache.dtype]
    if max_query_len == 1 and block_tables.dtype == torch.int32 and seq_lens.dtype == torch.int32:
        if block_tables.is_contiguous() and seq_lens.is_contiguous():
            out = torch.empty(tokens, q_size, dtype=qkv.dtype)
            _kernels.decode_attention_block(
                out.data_ptr(), qkv.data_ptr(), q_norm_ptr, k_norm_ptr, cos.data_ptr(), sin.data_ptr(),
                kv_cache.data_ptr(), cache_dtype, slot_mapping.data_ptr(), block_tables.data_ptr(),
                seq_lens.data_ptr(), tokens, num_heads, num_kv_heads, head_dim, rot_dim, num_blocks, block_size,
                block_tables.shape[1], qkv.stride(0), eps, scale, sliding_window, torch.get_num_threads(),
            )  # fmt: skip
            return out
    _kernels.prepare_qkv(
        qkv.data_ptr(), q_norm_ptr, k_norm_ptr, cos.data_ptr(), sin.data_ptr(), kv_cache.data_ptr(), cache_dtype,
        slot_mapping.data_ptr(), tokens, num_heads, num_kv_heads, head_dim, rot_dim, num_blocks * block_size,
        qkv.stride(0), eps, torch.get_num_threads(),
    )  # fmt: skip
    query = qkv[:, :q_size].reshape(tokens, num_heads, head_dim)
    args = (block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len, scale, sliding_window)
    return paged_attention(query, kv_cache, *args).view(tokens, q_size)
