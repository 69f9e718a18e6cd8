"""The vocabulary split over the group: the token embedding and the LM head.

Rank r holds the rows of ids [r * n, (r + 1) * n), n = ceil(vocab / size); the last shard is padded with
zero rows. The embedding looks up the ids it holds, zeros the others and sums over the group; the LM head
computes its shard's logits and gathers them on every rank, so that every rank samples from the same
logits (the workers then agree on their per-request sampling state; rank 0's tokens are the ones used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvserve.model.parallel.state import all_gather_last_dim, all_reduce, tp_group
from kvserve.model.quantization import QuantizationConfig, embed, packed_weights, table_logits, table_parameter


class VocabParallelEmbedding(nn.Module):
    """An embedding table split by vocabulary rows; `logits` uses it as the (tied or own) LM head. An own LM
    head (`head_only`) never looks ids up, so its float table on CPU is packed for oneDNN once loaded."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        quantization: QuantizationConfig | None = None,
        checkpoint_name: str = "",
        head_only: bool = False,
    ) -> None:
        super().__init__()
        group = tp_group()
        self.head_only = head_only
        self.vocab_size = vocab_size
        self.shard_rows = -(-vocab_size // group.size)
        self.start = group.rank * self.shard_rows
        if group.size == 1:  # the whole table, kept in the checkpoint's stored format (GGUF blocks) if it has one
            self.weight = table_parameter(quantization, checkpoint_name, vocab_size, hidden_size)
        else:  # quantized checkpoints are refused under tensor parallelism before the model is built
            self.weight = nn.Parameter(torch.empty(self.shard_rows, hidden_size), requires_grad=False)
        self.weight.weight_loader = self._load_rows

    def _load_rows(self, tensor: torch.Tensor, part: int) -> tuple[torch.Tensor, int]:
        shard = tensor[self.start : self.start + self.shard_rows]
        missing = self.shard_rows - shard.shape[0]
        if missing:
            shard = torch.cat([shard, shard.new_zeros(missing, *shard.shape[1:])])
        return shard, 0

    def finish_loading(self) -> None:
        if self.head_only and packed_weights.packable(self.weight):
            self.weight = packed_weights.packed_parameter(self.weight.data)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: [T]; returns [T, hidden]."""
        if tp_group().size == 1:
            return embed(input_ids, self.weight)
        local_ids = input_ids - self.start
        elsewhere = (local_ids < 0) | (local_ids >= self.shard_rows)
        hidden = F.embedding(local_ids.masked_fill(elsewhere, 0), self.weight)
        hidden.masked_fill_(elsewhere.unsqueeze(-1), 0)
        return all_reduce(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [S, hidden]; returns [S, vocab] on every rank."""
        if tp_group().size == 1:
            return table_logits(hidden, self.weight)
        return all_gather_last_dim(packed_weights.linear(hidden, self.weight))[..., : self.vocab_size]

    def extra_repr(self) -> str:
        return f"vocab={self.vocab_size}, rows={self.start}..{self.start + self.shard_rows}"
