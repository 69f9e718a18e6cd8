"""WhisperForConditionalGeneration: a log-mel + conv + transformer encoder, and a decoder on the paged KV cache.

A request's encoder input (`EncoderInput.features`) is its 30 s chunk of 16 kHz samples; the log-mel features
are computed here, batched on the model's device, in the step the scheduler runs the request's encoder
(`ForwardContext.cross.encoder_inputs`). That step also writes each decoder layer's cross-attention keys and
values of the encoder output into the request's cross blocks (see model/cross_attention.py); every decoder
step then reads them there. Parameter names follow transformers' checkpoints (without the `model.` prefix).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kvserve import ops
from kvserve.audio.log_mel import CHUNK_SAMPLES, LogMel
from kvserve.model.cross_attention import CrossAttentionContext
from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig
from kvserve.model.token_suppression import TokenSuppression
from kvserve.model.weights import WeightAssembler
from kvserve.request import EncoderInput, PoolingType, TaskKind


class WhisperAttention(nn.Module):
    """Projections only: how they attend (bidirectional, paged causal, cross) is the caller's."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim)


class WhisperEncoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = WhisperAttention(d_model, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [E, L, d_model], every position sees every other."""
        attn = self.self_attn
        x = self.self_attn_layer_norm(hidden)
        q, k, v = (attn.heads(proj(x)).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        o = F.scaled_dot_product_attention(q, k, v, scale=attn.scale).transpose(1, 2).flatten(2)
        hidden = hidden + attn.out_proj(o)
        return hidden + self.fc2(F.gelu(self.fc1(self.final_layer_norm(hidden))))


class WhisperEncoder(nn.Module):
    def __init__(self, hf: dict) -> None:
        super().__init__()
        d = hf["d_model"]
        self.conv1 = nn.Conv1d(hf["num_mel_bins"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(hf["max_source_positions"], d)
        self.layers = nn.ModuleList(
            WhisperEncoderLayer(d, hf["encoder_attention_heads"], hf["encoder_ffn_dim"])
            for _ in range(hf["encoder_layers"])
        )
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [E, mel bins, 3000] -> encoder output [E, 1500, d_model]."""
        hidden = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        hidden = hidden + self.embed_positions.weight
        for layer in self.layers:
            hidden = layer(hidden)
        return self.layer_norm(hidden)


class WhisperDecoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = WhisperAttention(d_model, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.encoder_attn = WhisperAttention(d_model, num_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def write_cross_kv(self, encoded: torch.Tensor, kv_cache: torch.Tensor, cross: CrossAttentionContext) -> None:
        """encoded [E * L, d_model]: this step's encoder outputs, into their requests' cross blocks."""
        attn = self.encoder_attn
        ops.reshape_and_cache(
            attn.heads(attn.k_proj(encoded)), attn.heads(attn.v_proj(encoded)), kv_cache, cross.slot_mapping
        )

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext, kv_cache: torch.Tensor) -> torch.Tensor:
        attn = self.self_attn
        x = self.self_attn_layer_norm(hidden)
        q, k, v = (attn.heads(proj(x)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        ops.reshape_and_cache(k, v.contiguous(), kv_cache, ctx.slot_mapping)
        o = ops.paged_attention(
            q.contiguous(),
            kv_cache,
            ctx.block_tables,
            ctx.seq_lens,
            ctx.query_start_loc,
            ctx.max_query_len,
            ctx.max_seq_len,
            attn.scale,
            0,
        )
        hidden = hidden + attn.out_proj(o.flatten(1))

        cross, attn = ctx.cross, self.encoder_attn
        q = attn.heads(attn.q_proj(self.encoder_attn_layer_norm(hidden)))
        o = ops.cross_attention(
            q.contiguous(),
            kv_cache,
            cross.block_tables,
            cross.seq_lens,
            ctx.query_start_loc,
            ctx.max_query_len,
            cross.max_seq_len,
            attn.scale,
        )
        hidden = hidden + attn.out_proj(o.flatten(1))
        return hidden + self.fc2(F.gelu(self.fc1(self.final_layer_norm(hidden))))


class WhisperDecoder(nn.Module):
    def __init__(self, hf: dict) -> None:
        super().__init__()
        d = hf["d_model"]
        self.embed_scale = d**0.5 if hf.get("scale_embedding") else 1.0
        self.embed_tokens = nn.Embedding(hf["vocab_size"], d)
        self.embed_positions = nn.Embedding(hf["max_target_positions"], d)
        self.layers = nn.ModuleList(
            WhisperDecoderLayer(d, hf["decoder_attention_heads"], hf["decoder_ffn_dim"])
            for _ in range(hf["decoder_layers"])
        )
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)
        for layer, kv_cache in zip(self.layers, ctx.kv_caches):
            hidden = layer(hidden, ctx, kv_cache)
        return self.layer_norm(hidden)


class WhisperForConditionalGeneration(nn.Module):
    supported_tasks: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.ENCODER_DECODER})
    pooling_kinds: ClassVar[frozenset[str]] = frozenset()
    default_pooling: ClassVar[PoolingType] = "last"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hf = config.hf_config
        self.config = config
        self.encoder = WhisperEncoder(hf)
        self.decoder = WhisperDecoder(hf)
        device = torch.get_default_device()
        self.log_mel = LogMel(int(hf["num_mel_bins"]), device)
        generation = config.hf_generation_config
        self.token_suppression = TokenSuppression(
            generation.get("suppress_tokens", hf.get("suppress_tokens")) or (),
            generation.get("begin_suppress_tokens", hf.get("begin_suppress_tokens")) or (),
            config.vocab_size,
            device,
        )

    @property
    def num_encoder_tokens(self) -> int:
        """Encoder output positions per request: every chunk is padded to 30 s."""
        return self.encoder.embed_positions.num_embeddings

    def unsupported_encoder_input(self, encoder_input: EncoderInput) -> str | None:
        features = encoder_input.features
        if features.shape != (CHUNK_SAMPLES,) or features.dtype != np.float32:
            return (
                f"Whisper's encoder input is {CHUNK_SAMPLES} float32 samples (30 s at 16 kHz), "
                f"got {features.dtype} {features.shape}"
            )
        if encoder_input.num_encoder_tokens != self.num_encoder_tokens:
            return (
                f"Whisper's encoder has {self.num_encoder_tokens} output positions, "
                f"got {encoder_input.num_encoder_tokens}"
            )
        return None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids, positions: [T] decoder tokens; returns the decoder's final hidden states [T, d_model]."""
        cross = ctx.cross
        if cross is None:
            raise ValueError("Whisper steps need cross-attention inputs (encoder-decoder requests only)")
        if cross.encoder_inputs is not None:
            features = self.log_mel(cross.encoder_inputs.float()).to(self.encoder.conv1.weight.dtype)
            encoded = self.encoder(features).flatten(0, 1)
            for layer, kv_cache in zip(self.decoder.layers, ctx.kv_caches):
                layer.write_cross_kv(encoded, kv_cache, cross)
        return self.decoder(input_ids, positions, ctx)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output projection is tied to the token embeddings in every Whisper checkpoint."""
        return F.linear(hidden, self.decoder.embed_tokens.weight).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        assembler = WeightAssembler(self)
        for name, tensor in weights:
            if name == "proj_out.weight":  # tied to decoder.embed_tokens
                continue
            assembler.copy(name.removeprefix("model."), tensor)
        assembler.finish()
