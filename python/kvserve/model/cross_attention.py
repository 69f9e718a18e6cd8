"""The per-step inputs of encoder-decoder models: which encoders run, and where cross-attention K/V live.

Cross-attention keys and values share the decoder's per-layer KV cache tensors [2, NB, BS, KVH, D]: the core
takes a request's cross blocks from the same block pool as its self-attention blocks (at admission, one
block per block_size encoder positions), so a decoder layer writes its cross K/V into its own cache tensor at
`slot_mapping` in the step the request's encoder runs, and reads them through `block_tables` every step
after. Their shapes match because Whisper's cross-attention has the decoder's heads and head size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kvserve.messages import ExecuteBatch
from kvserve.request import PreparedRequest


@dataclass(frozen=True, slots=True)
class CrossAttentionContext:
    encoder_inputs: torch.Tensor | None  # [E, ...] this step's encoder inputs (ExecuteBatch.encoder_handles order)
    slot_mapping: torch.Tensor  # [E * encoder length] int64: cache slot of each encoder output position
    block_tables: torch.Tensor  # [R, Wc] int32: every scheduled request's cross blocks
    seq_lens: torch.Tensor  # [R] int32: encoder output length per request
    max_seq_len: int


def cross_attention_context(
    batch: ExecuteBatch,
    requests: Sequence[PreparedRequest | None],
    to_device: Callable[[np.ndarray], torch.Tensor],
) -> CrossAttentionContext | None:
    """None for a step without encoder-decoder requests. `requests` is the persistent batch, by slot; only
    the requests whose encoder runs this step (new or resumed after preemption) are visited."""
    if batch.cross_block_tables.shape[1] == 0:
        return None
    encoder_inputs = None
    if len(batch.encoder_handles):
        slots = batch.req_slots[batch.encoder_req_indices].tolist()
        encoder_inputs = to_device(np.stack([requests[slot].request.encoder_input.features for slot in slots]))
    return CrossAttentionContext(
        encoder_inputs=encoder_inputs,
        slot_mapping=to_device(batch.cross_slot_mapping),
        block_tables=to_device(batch.cross_block_tables),
        seq_lens=to_device(batch.cross_seq_lens),
        max_seq_len=int(batch.cross_seq_lens.max()),
    )
