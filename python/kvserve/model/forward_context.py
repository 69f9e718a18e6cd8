"""Per-step inputs every attention layer reads, built once per step from the scheduler's batch arrays."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.model.cross_attention import CrossAttentionContext


@dataclass(frozen=True, slots=True)
class ForwardContext:
    slot_mapping: torch.Tensor  # [T] int64
    block_tables: torch.Tensor  # [R, W] int32
    seq_lens: torch.Tensor  # [R] int32, context length after this step
    query_start_loc: torch.Tensor  # [R + 1] int32
    token_seq_lens: torch.Tensor  # [T] int32, each token's request's seq_len (dynamic RoPE)
    max_query_len: int
    max_seq_len: int
    kv_caches: list[torch.Tensor]  # per layer [2, NB, BS, KVH, D]
    token_type_ids: torch.Tensor | None = None  # [T] int64, for models that read segment ids (BERT); else None
    cross: CrossAttentionContext | None = None  # encoder-decoder models only
