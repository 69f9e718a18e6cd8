"""Llama-family decoders: Llama, Mistral, Qwen2 and Qwen3 share this implementation.

Differences are configuration: q/k/v (and o) biases, per-head q/k RMSNorm (Qwen3), sliding-window layers,
tied embeddings, and the RoPE variant. Projections are fused at load time (q|k|v and gate|up) so each
layer runs four matmuls; attention reads and writes the paged KV cache through kvserve.ops.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kvserve import ops
from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig
from kvserve.model.rope import RotaryEmbedding
from kvserve.model.weights import WeightAssembler
from kvserve.request import PoolingType, TaskKind


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.q_size = config.num_attention_heads * d
        self.kv_size = config.num_key_value_heads * d
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.eps = config.rms_norm_eps
        self.scale = d**-0.5
        self.sliding_window = config.sliding_windows[layer_index] or 0
        self.input_layernorm = _param(h)
        self.post_attention_layernorm = _param(h)
        self.qkv_proj = _param(self.q_size + 2 * self.kv_size, h)
        self.qkv_bias = _param(self.q_size + 2 * self.kv_size) if config.qkv_bias else None
        self.q_norm = _param(d) if config.qk_norm else None
        self.k_norm = _param(d) if config.qk_norm else None
        self.o_proj = _param(h, self.q_size)
        self.o_bias = _param(h) if config.o_proj_bias else None
        self.gate_up_proj = _param(2 * config.intermediate_size, h)
        self.gate_up_bias = _param(2 * config.intermediate_size) if config.mlp_bias else None
        self.down_proj = _param(h, config.intermediate_size)
        self.down_bias = _param(h) if config.mlp_bias else None

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        ctx: ForwardContext,
        kv_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            hidden = ops.rms_norm(hidden, self.input_layernorm, self.eps)
        else:
            hidden, residual = ops.fused_add_rms_norm(hidden, residual, self.input_layernorm, self.eps)

        num_tokens = hidden.shape[0]
        qkv = F.linear(hidden, self.qkv_proj, self.qkv_bias)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q = ops.rms_norm(q, self.q_norm, self.eps)
            k = ops.rms_norm(k, self.k_norm, self.eps)
        q, k = ops.rotary_embedding(q, k, *cos_sin)
        ops.reshape_and_cache(k, v, kv_cache, ctx.slot_mapping)
        attn = ops.paged_attention(
            q.contiguous(),
            kv_cache,
            ctx.block_tables,
            ctx.seq_lens,
            ctx.query_start_loc,
            ctx.max_query_len,
            ctx.max_seq_len,
            self.scale,
            self.sliding_window,
        )
        hidden = F.linear(attn.view(num_tokens, self.q_size), self.o_proj, self.o_bias)

        hidden, residual = ops.fused_add_rms_norm(hidden, residual, self.post_attention_layernorm, self.eps)
        hidden = ops.silu_and_mul(F.linear(hidden, self.gate_up_proj, self.gate_up_bias))
        return F.linear(hidden, self.down_proj, self.down_bias), residual


class LlamaForCausalLM(nn.Module):
    # Generation, and prefill-only rows: embeddings from the final hidden states, or the next-token
    # distribution (generative scoring). A decoder's last position is the one that has seen the whole prompt.
    supported_tasks: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.GENERATE, TaskKind.PREFILL_ONLY})
    pooling_kinds: ClassVar[frozenset[str]] = frozenset({"embed", "next_token"})
    default_pooling: ClassVar[PoolingType] = "last"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = _param(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = _param(config.hidden_size)
        self.lm_head = None if config.tie_word_embeddings else _param(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.rope, device=torch.get_default_device())

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids, positions: [T]; returns the final hidden states [T, hidden]."""
        hidden = F.embedding(input_ids, self.embed_tokens)
        cos_sin = self.rotary.cos_sin(positions, ctx.token_seq_lens, dtype=hidden.dtype)
        residual = None
        for layer, kv_cache in zip(self.layers, ctx.kv_caches):
            hidden, residual = layer(hidden, residual, cos_sin, ctx, kv_cache)
        hidden, _ = ops.fused_add_rms_norm(hidden, residual, self.norm, self.config.rms_norm_eps)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [S, hidden] of the sampled rows; returns float32 logits [S, vocab]."""
        weight = self.embed_tokens if self.lm_head is None else self.lm_head
        return F.linear(hidden, weight).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies Hugging Face-named tensors into the fused parameters; raises on missing or unknown ones."""
        c = self.config
        q, kv, inter = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.intermediate_size
        # HF projection -> (our parameter stem, first row inside it)
        projections = {
            "q_proj": ("qkv", 0),
            "k_proj": ("qkv", q),
            "v_proj": ("qkv", q + kv),
            "o_proj": ("o", 0),
            "gate_proj": ("gate_up", 0),
            "up_proj": ("gate_up", inter),
            "down_proj": ("down", 0),
        }
        assembler = WeightAssembler(self)
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if name.endswith("rotary_emb.inv_freq") or (c.tie_word_embeddings and name == "lm_head.weight"):
                continue
            parts = name.split(".")
            if parts[0] != "layers":
                assembler.copy(name.removesuffix(".weight"), tensor)
            elif len(parts) == 5 and parts[3] in projections:  # layers.i.self_attn.q_proj.weight
                stem, offset = projections[parts[3]]
                kind = "proj" if parts[4] == "weight" else "bias"
                assembler.copy(f"layers.{parts[1]}.{stem}_{kind}", tensor, offset)
            else:  # layers.i.input_layernorm.weight, layers.i.self_attn.q_norm.weight
                assembler.copy(f"layers.{parts[1]}.{parts[-2]}", tensor)
        assembler.finish()
