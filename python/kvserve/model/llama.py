"""Llama-family decoders: Llama, Mistral, Qwen2 and Qwen3 share this implementation.

Differences are configuration: q/k/v (and o) biases, per-head q/k RMSNorm (Qwen3), sliding-window layers,
tied embeddings, and the RoPE variant. Projections are fused at load time (q|k|v and gate|up) so each
layer runs four matmuls; attention reads and writes the paged KV cache through kvserve.ops.

Under tensor parallelism (kvserve.model.parallel) each rank holds its share of the heads and of the MLP's
rows: q|k|v and gate|up are column-parallel, o_proj and down_proj row-parallel (one all-reduce each), the
embedding and LM head split the vocabulary. With one rank the layers are the whole projections.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from kvserve import ops
from kvserve.model.cpu_decode import CpuDecodeLayers
from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig
from kvserve.model.parallel import ColumnParallelLinear, ParallelLinear, RowParallelLinear, VocabParallelEmbedding
from kvserve.model.parallel.state import shard_size
from kvserve.model.quantization import LinearMethod, linear_method
from kvserve.model.rope import RotaryEmbedding
from kvserve.model.weights import WeightAssembler
from kvserve.request import PoolingType, TaskKind


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        # This rank's heads (all of them with one rank); a KV head is never split or replicated.
        self.num_heads = shard_size(config.num_attention_heads, "num_attention_heads")
        self.num_kv_heads = shard_size(config.num_key_value_heads, "num_key_value_heads")
        self.head_dim = d
        self.q_size, self.kv_size = self.num_heads * d, self.num_kv_heads * d
        self.eps = config.rms_norm_eps
        self.scale = d**-0.5
        self.sliding_window = config.sliding_windows[layer_index] or 0
        self.input_layernorm = _param(h)
        self.post_attention_layernorm = _param(h)
        self.q_norm = _param(d) if config.qk_norm else None
        self.k_norm = _param(d) if config.qk_norm else None
        inter = config.intermediate_size

        def method(*checkpoint_names: str) -> LinearMethod:
            return linear_method(config.quantization, [f"model.layers.{layer_index}.{n}" for n in checkpoint_names])

        q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
        qkv_method = method("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        self.qkv_proj = ColumnParallelLinear(h, [q, kv, kv], config.qkv_bias, qkv_method)
        self.o_proj = RowParallelLinear(q, h, config.o_proj_bias, method("self_attn.o_proj"))
        gate_up_method = method("mlp.gate_proj", "mlp.up_proj")
        self.gate_up_proj = ColumnParallelLinear(h, [inter, inter], config.mlp_bias, gate_up_method)
        self.down_proj = RowParallelLinear(inter, h, config.mlp_bias, method("mlp.down_proj"))

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
    supports_tensor_parallel: ClassVar[bool] = True  # built from kvserve.model.parallel layers

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        vocab_by_hidden = (config.vocab_size, config.hidden_size)
        self.embed_tokens = VocabParallelEmbedding(*vocab_by_hidden, config.quantization, "model.embed_tokens")
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = _param(config.hidden_size)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else VocabParallelEmbedding(*vocab_by_hidden, config.quantization, "lm_head", head_only=True)
        )
        self.rotary = RotaryEmbedding(config.rope, device=torch.get_default_device())
        # Built at the first CPU forward, once the weights are loaded (None: they do not fit it).
        self._cpu_decode: CpuDecodeLayers | None | bool = False

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids, positions: [T]; returns the final hidden states [T, hidden]."""
        hidden = self.embed_tokens(input_ids)
        cos_sin = self.rotary.cos_sin(positions, ctx.token_seq_lens, hidden.dtype, max_position=ctx.max_seq_len - 1)
        if not hidden.is_cuda:
            if self._cpu_decode is False:
                self._cpu_decode = CpuDecodeLayers.build(self)
            if self._cpu_decode is not None:
                out = self._cpu_decode(hidden, *cos_sin, ctx)
                if out is not None:
                    return out
        residual = None
        for layer, kv_cache in zip(self.layers, ctx.kv_caches):
            hidden, residual = layer(hidden, residual, cos_sin, ctx, kv_cache)
        hidden, _ = ops.fused_add_rms_norm(hidden, residual, self.norm, self.config.rms_norm_eps)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [S, hidden] of the sampled rows; returns float32 logits [S, vocab]."""
        head = self.embed_tokens if self.lm_head is None else self.lm_head
        return head.logits(hidden).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies Hugging Face-named tensors into the fused parameters; raises on missing or unknown ones."""
        c = self.config
        # HF projection -> (our fused projection, its part inside it)
        projections = {
            "q_proj": ("qkv_proj", 0),
            "k_proj": ("qkv_proj", 1),
            "v_proj": ("qkv_proj", 2),
            "o_proj": ("o_proj", 0),
            "gate_proj": ("gate_up_proj", 0),
            "up_proj": ("gate_up_proj", 1),
            "down_proj": ("down_proj", 0),
        }
        linears = {name: module for name, module in self.named_modules() if isinstance(module, ParallelLinear)}
        assembler = WeightAssembler(self)
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if name.endswith("rotary_emb.inv_freq") or (c.tie_word_embeddings and name == "lm_head.weight"):
                continue
            parts = name.split(".")
            if parts[0] in ("embed_tokens", "lm_head"):  # vocabulary-split modules
                assembler.load(name, tensor)
            elif parts[0] != "layers":
                assembler.copy(name.removesuffix(".weight"), tensor)
            elif len(parts) == 5 and parts[3] in projections:  # layers.i.self_attn.q_proj.weight (.bias, .weight_scale)
                fused, part = projections[parts[3]]
                prefix = f"layers.{parts[1]}.{fused}"
                linear = linears.get(prefix)
                if linear is None:
                    assembler.copy(f"{prefix}.{parts[4]}", tensor)  # a layer index the model lacks: reported
                else:
                    linear.load_checkpoint_tensor(assembler, prefix, parts[4], tensor, part)
            else:  # layers.i.input_layernorm.weight, layers.i.self_attn.q_norm.weight
                assembler.copy(f"layers.{parts[1]}.{parts[-2]}", tensor)
        assembler.finish()
