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
from kvserve.model.quantization import Linear, linear_method
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
        self.q_norm = _param(d) if config.qk_norm else None
        self.k_norm = _param(d) if config.qk_norm else None
        inter = config.intermediate_size

        def projection(in_features: int, out_features: int, bias: bool, *checkpoint_names: str) -> Linear:
            names = [f"model.layers.{layer_index}.{name}" for name in checkpoint_names]
            return Linear(in_features, out_features, bias, linear_method(config.quantization, names))

        qkv_names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        self.qkv_proj = projection(h, self.q_size + 2 * self.kv_size, config.qkv_bias, *qkv_names)
        self.o_proj = projection(self.q_size, h, config.o_proj_bias, "self_attn.o_proj")
        self.gate_up_proj = projection(h, 2 * inter, config.mlp_bias, "mlp.gate_proj", "mlp.up_proj")
        self.down_proj = projection(inter, h, config.mlp_bias, "mlp.down_proj")

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

        attn = ops.attention_block(
            self.qkv_proj(hidden), self.num_heads, self.num_kv_heads, self.head_dim, self.q_norm, self.k_norm,
            self.eps, *cos_sin, kv_cache, ctx.slot_mapping, ctx.block_tables, ctx.seq_lens, ctx.query_start_loc,
            ctx.max_query_len, ctx.max_seq_len, self.scale, self.sliding_window,
        )  # fmt: skip
        hidden = self.o_proj(attn)

        hidden, residual = ops.fused_add_rms_norm(hidden, residual, self.post_attention_layernorm, self.eps)
        hidden = ops.silu_and_mul(self.gate_up_proj(hidden))
        return self.down_proj(hidden), residual


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
        # HF projection -> (our fused projection, first row inside it, rows)
        projections = {
            "q_proj": ("qkv_proj", 0, q),
            "k_proj": ("qkv_proj", q, kv),
            "v_proj": ("qkv_proj", q + kv, kv),
            "o_proj": ("o_proj", 0, c.hidden_size),
            "gate_proj": ("gate_up_proj", 0, inter),
            "up_proj": ("gate_up_proj", inter, inter),
            "down_proj": ("down_proj", 0, c.hidden_size),
        }
        linears = {name: module for name, module in self.named_modules() if isinstance(module, Linear)}
        assembler = WeightAssembler(self)
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if name.endswith("rotary_emb.inv_freq") or (c.tie_word_embeddings and name == "lm_head.weight"):
                continue
            parts = name.split(".")
            if parts[0] != "layers":
                assembler.copy(name.removesuffix(".weight"), tensor)
            elif len(parts) == 5 and parts[3] in projections:  # layers.i.self_attn.q_proj.weight (.bias, .weight_scale)
                fused, offset, rows = projections[parts[3]]
                linear = linears.get(f"layers.{parts[1]}.{fused}")
                kind = parts[4]
                loaded = (kind, tensor) if linear is None else linear.method.checkpoint_tensor(kind, tensor, rows)
                if loaded is not None:
                    assembler.copy(f"layers.{parts[1]}.{fused}.{loaded[0]}", loaded[1], offset)
            else:  # layers.i.input_layernorm.weight, layers.i.self_attn.q_norm.weight
                assembler.copy(f"layers.{parts[1]}.{parts[-2]}", tensor)
        assembler.finish()
