"""A Llama-family decode step's decoder layers in one C++ call on CPU (`kvserve._core.cpu.DecodeLayers`).

Run op by op, a layer is ~10 Python calls into torch and our kernels, each with its tensor allocations and
checks: ~100 µs a layer, which is most of a small model's step and a third of the default model's at one
stream (RESULTS.md, #14). For the steps that fit (every projection kept in its stored format or a float32
weight in oneDNN's blocked layout (packed_weights.py), float32 activations, a float32/float16/bfloat16 KV
cache, one rank, one query token per request: both kernels multiply every batch size the same way) the
whole stack of layers and the final norm run in C++
with the GIL released, calling the same kernels in the same order on the same values, so the hidden states
are bit-identical to the op-by-op path's; any other step takes that path.
"""

from __future__ import annotations

import torch

from kvserve import _core
from kvserve.model.forward_context import ForwardContext
from kvserve.model.parallel.state import tp_group
from kvserve.model.quantization.linear import Linear, LinearMethod
from kvserve.model.quantization.stored import StoredLinearMethod
from kvserve.ops.cpu_kernels import CACHE_DTYPES, fits_cache

_FLOAT32 = torch.float32


def _float_pointer(param: torch.Tensor | None) -> int | None:
    """The address of a float32 contiguous CPU tensor, 0 for None; None when the tensor does not fit."""
    if param is None:
        return 0
    if param.dtype is not _FLOAT32 or not param.is_cpu or not param.is_contiguous():
        return None
    return param.data_ptr()


# The segment format of a float32 weight in the blocked layout (kvserve::cpu::StoredProjection).
_BLOCKED_FLOAT32 = -1


def _projection(linear: Linear) -> tuple | None:
    """(segments, row_stride, out_features, bias, k_padded) of a stored-format or blocked float32 projection;
    None for any other."""
    bias = _float_pointer(linear.bias)
    if bias is None:
        return None
    blocked = getattr(linear.weight, "blocked", None)
    if type(linear.method) is LinearMethod and blocked is not None:
        address, _, _, k_padded = blocked
        return [(address, _BLOCKED_FLOAT32, linear.out_features)], 0, linear.out_features, bias, k_padded
    if not isinstance(linear.method, StoredLinearMethod) or not hasattr(linear, "stored") or len(linear.stored) > 3:
        return None
    segments = [(w._pointer(), w.fmt, w.out_features) for w in linear.stored]
    return segments, linear.stored[0].data.stride(0), linear.out_features, bias, 0


def _weight_tensors(linear: Linear) -> list[torch.Tensor]:
    return [w.data for w in linear.stored] if hasattr(linear, "stored") else [linear.weight]


class CpuDecodeLayers:
    """The C++ layer stack of one model, which holds the addresses of the model's parameters."""

    __slots__ = ("_kv_pointers", "_kv_shape", "_layers", "_num_layers", "_tensors")

    def __init__(self, layers: _core.cpu.DecodeLayers, num_layers: int, tensors: list[torch.Tensor]) -> None:
        self._layers = layers
        # The tensors whose addresses the C++ side holds, kept alive here even if the model's attributes
        # were ever reassigned (no path does that after loading; this keeps such a change memory-safe).
        self._tensors = tensors
        self._num_layers = num_layers
        self._kv_pointers: list[int] = []
        self._kv_shape: torch.Size | None = None

    @classmethod
    def build(cls, model: torch.nn.Module) -> CpuDecodeLayers | None:
        """The fused layers of a LlamaForCausalLM on CPU, or None when its weights do not fit them."""
        if tp_group().size > 1 or not model.layers:
            return None
        specs, tensors = [], [model.norm]
        for layer in model.layers:
            linears = (layer.qkv_proj, layer.o_proj, layer.gate_up_proj, layer.down_proj)
            norms = (layer.input_layernorm, layer.post_attention_layernorm, layer.q_norm, layer.k_norm)
            projections = [_projection(linear) for linear in linears]
            norm_pointers = [_float_pointer(norm) for norm in norms]
            if None in projections or None in norm_pointers or 0 in norm_pointers[:2]:
                return None
            specs.append((*projections, *norm_pointers, layer.sliding_window))
            for linear in linears:
                tensors.extend(_weight_tensors(linear))
            tensors.extend(t for t in (*(linear.bias for linear in linears), *norms) if t is not None)
        final_norm = _float_pointer(model.norm)
        first = model.layers[0]
        if not final_norm:
            return None
        layers = _core.cpu.DecodeLayers(
            hidden=model.config.hidden_size, heads=first.num_heads, kv_heads=first.num_kv_heads,
            head_dim=first.head_dim, intermediate=first.down_proj.in_features,
            rot_dim=model.rotary.params.rotary_dim, eps=first.eps, scale=first.scale, layers=specs,
            final_norm=final_norm,
        )  # fmt: skip
        return cls(layers, len(specs), tensors)

    def __call__(
        self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: ForwardContext
    ) -> torch.Tensor | None:
        """The final hidden states [T, hidden] of a decode step from its embeddings; None when the step does not
        fit (the caller runs the layers op by op)."""
        tokens = hidden.shape[0]
        if ctx.max_query_len != 1 or tokens == 0 or ctx.cross is not None:
            return None
        if hidden.dtype is not _FLOAT32 or not hidden.is_cpu or not hidden.is_contiguous():
            return None
        slot_mapping, block_tables, seq_lens = ctx.slot_mapping, ctx.block_tables, ctx.seq_lens
        if slot_mapping.dtype != torch.int64 or block_tables.dtype != torch.int32 or seq_lens.dtype != torch.int32:
            return None
        if not (slot_mapping.is_contiguous() and block_tables.is_contiguous() and seq_lens.is_contiguous()):
            return None
        if block_tables.shape[0] != tokens or cos.shape[0] != tokens:
            return None
        if cos.dtype is not _FLOAT32 or not (cos.is_contiguous() and sin.is_contiguous()):
            return None
        kv_pointers = self._cache_pointers(ctx.kv_caches)
        if kv_pointers is None:
            return None
        cache_dtype = CACHE_DTYPES[ctx.kv_caches[0].dtype]
        out = torch.empty_like(hidden)
        shape = self._kv_shape
        self._layers.run(
            out.data_ptr(), hidden.data_ptr(), cos.data_ptr(), sin.data_ptr(), kv_pointers, cache_dtype,
            slot_mapping.data_ptr(),
            block_tables.data_ptr(), seq_lens.data_ptr(), tokens, shape[1], shape[2], block_tables.shape[1],
            torch.get_num_threads(),
        )  # fmt: skip
        return out

    def _cache_pointers(self, kv_caches: list[torch.Tensor]) -> list[int] | None:
        """The caches' addresses when they are contiguous CPU tensors of one shape and one dtype the kernels
        store (float32, float16, bfloat16); checked once per set of caches (the runner allocates them once)."""
        pointers = [cache.data_ptr() for cache in kv_caches]
        if pointers == self._kv_pointers:
            return pointers
        if len(kv_caches) != self._num_layers:
            return None
        shape, dtype = kv_caches[0].shape, kv_caches[0].dtype
        for cache in kv_caches:
            if not fits_cache(cache) or cache.dtype is not dtype or cache.shape != shape:
                return None
        self._kv_pointers, self._kv_shape = pointers, shape
        return pointers
