"""The fused C++ decode layers (model/cpu_decode.py) against the op-by-op path they replace.

The default model (SmolLM2-135M-Instruct, Q4_1 GGUF, loaded as `kvserve serve` loads it) runs decode steps
both ways on the same inputs; the final hidden states and the KV cache written must be bit-identical, since
the fused path calls the same kernels in the same order. A second copy of the model is given what SmolLM2
lacks (q/k/v and MLP biases, per-head q/k norms as in Qwen3, sliding-window layers, a q|k|v projection in
three stored segments) to cover those branches. Float32 checkpoints (tiny random Llama, Qwen2 with q/k/v
biases and Qwen3 with q/k norms) take the fused path with their weights in oneDNN's blocked layout.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kvserve import _core
from kvserve.cli import embedded_model_path
from kvserve.model.cpu_decode import CpuDecodeLayers
from kvserve.model.forward_context import ForwardContext
from kvserve.model.loader import build_model, model_weights, resolve_model_dir
from kvserve.model.model_config import ModelConfig

BLOCK_SIZE = 16


def _load() -> torch.nn.Module:
    model_dir = resolve_model_dir(str(embedded_model_path()))
    config = ModelConfig.from_directory(model_dir)
    return build_model(
        config, model_weights(model_dir, config, torch.device("cpu")), torch.float32, torch.device("cpu")
    )


@pytest.fixture(scope="module")
def smollm2() -> torch.nn.Module:
    return _load()


@pytest.fixture(scope="module")
def with_extras() -> torch.nn.Module:
    """SmolLM2 with biases, q/k norms, sliding windows and a q|k|v split into three stored segments."""
    model = _load()
    generator = torch.Generator().manual_seed(0)
    for i, layer in enumerate(model.layers):
        for proj in (layer.qkv_proj, layer.o_proj, layer.gate_up_proj, layer.down_proj):
            proj.bias = torch.nn.Parameter(torch.randn(proj.out_features, generator=generator), requires_grad=False)
        layer.q_norm = torch.nn.Parameter(
            1 + 0.1 * torch.randn(layer.head_dim, generator=generator), requires_grad=False
        )
        layer.k_norm = torch.nn.Parameter(
            1 + 0.1 * torch.randn(layer.head_dim, generator=generator), requires_grad=False
        )
        layer.sliding_window = 7 if i % 2 else 0
        method = layer.qkv_proj.method
        ((fmt, _),) = method.segments
        method.segments = [(fmt, layer.q_size), (fmt, layer.kv_size), (fmt, layer.kv_size)]
        layer.qkv_proj.stored = method.stored_weights(layer.qkv_proj)
    return model


def _decode_inputs(
    model: torch.nn.Module, contexts: list[int], cache_dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, ForwardContext]:
    """One decode token per request of the given context lengths, with a random cache behind them."""
    config = model.config
    width = -(-max(contexts) // BLOCK_SIZE)
    num_blocks = len(contexts) * width
    generator = torch.Generator().manual_seed(len(contexts))
    kv_caches = [
        torch.randn(2, num_blocks, BLOCK_SIZE, config.num_key_value_heads, config.head_dim, generator=generator).to(
            cache_dtype
        )
        for _ in range(config.num_hidden_layers)
    ]
    # Blocks in a shuffled order, so that a wrong table read shows.
    tables = torch.randperm(num_blocks, generator=generator).to(torch.int32).view(len(contexts), width)
    seq_lens = torch.tensor(contexts, dtype=torch.int32)
    last = seq_lens.long() - 1
    slots = tables.long().gather(1, (last // BLOCK_SIZE).unsqueeze(1)).squeeze(1) * BLOCK_SIZE + last % BLOCK_SIZE
    query_start_loc = torch.arange(len(contexts) + 1, dtype=torch.int32)
    ctx = ForwardContext(slots, tables, seq_lens, query_start_loc, seq_lens.clone(), 1, max(contexts), kv_caches)
    ids = torch.randint(0, config.vocab_size, (len(contexts),), generator=generator)
    return ids, last, ctx


def _both_paths(model: torch.nn.Module, contexts: list[int], cache_dtype: torch.dtype = torch.float32) -> None:
    ids, positions, ctx = _decode_inputs(model, contexts, cache_dtype)
    caches_before = [cache.clone() for cache in ctx.kv_caches]
    with torch.inference_mode():
        fused = model(ids, positions, ctx)
        assert isinstance(model._cpu_decode, CpuDecodeLayers)
        caches_fused = [cache.clone() for cache in ctx.kv_caches]
        for cache, before in zip(ctx.kv_caches, caches_before):
            cache.copy_(before)
        layers, model._cpu_decode = model._cpu_decode, None
        try:
            by_op = model(ids, positions, ctx)
        finally:
            model._cpu_decode = layers
    assert torch.equal(fused, by_op)
    for ours, theirs in zip(caches_fused, ctx.kv_caches):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("contexts", [[1], [37], [5, 64, 17], [20 + 3 * i for i in range(24)]])
def test_fused_decode_equals_the_op_by_op_path(smollm2: torch.nn.Module, contexts: list[int]) -> None:
    _both_paths(smollm2, contexts)


@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_cache_takes_the_fused_path_too(smollm2: torch.nn.Module, cache_dtype: torch.dtype) -> None:
    _both_paths(smollm2, [5, 64, 17], cache_dtype)


@pytest.mark.parametrize("contexts", [[9], [3, 30, 12]])
def test_biases_qk_norms_windows_and_segments(with_extras: torch.nn.Module, contexts: list[int]) -> None:
    _both_paths(with_extras, contexts)


@pytest.mark.skipif(not _core.cpu.blocked_matmul_fits(), reason="the blocked kernel needs AVX-512")
@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_float32_checkpoints_take_the_fused_path_with_blocked_weights(tiny_model_dir, name: str) -> None:
    model_dir = tiny_model_dir(name)
    config = ModelConfig.from_directory(model_dir)
    cpu = torch.device("cpu")
    model = build_model(config, model_weights(model_dir, config, cpu), torch.float32, cpu)
    assert all(getattr(layer.qkv_proj.weight, "blocked", None) is not None for layer in model.layers)
    for contexts in ([1], [5, 40, 17]):
        _both_paths(model, contexts)


def _context(ctx: ForwardContext, **changes: object) -> ForwardContext:
    return dataclasses.replace(ctx, **changes)


def test_steps_that_do_not_fit_take_the_op_by_op_path(smollm2: torch.nn.Module) -> None:
    """A prefill step, caches of two dtypes: the fused layers decline."""
    layers = CpuDecodeLayers.build(smollm2)
    assert layers is not None
    for contexts, changes in (([4], {"max_query_len": 2}), ([4], {"kv_caches": "half"})):
        ids, positions, ctx = _decode_inputs(smollm2, contexts)
        if changes.get("kv_caches") == "half":
            changes["kv_caches"] = [cache.half() if i else cache for i, cache in enumerate(ctx.kv_caches)]
        cos, sin = smollm2.rotary.cos_sin(positions)
        assert layers(smollm2.embed_tokens(ids), cos, sin, _context(ctx, **changes)) is None
