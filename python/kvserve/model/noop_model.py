"""--load-format noop: a model whose forward does nothing, so a run measures only the framework around it.

It returns zero hidden states and zero logits of the real shapes, so sampling still runs on a
vocabulary-sized batch; it has no KV cache. Not for serving answers: every token is greedy token 0.
"""

from __future__ import annotations

import torch
from torch import nn

from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig


class NoopModel(nn.Module):
    def __init__(self, config: ModelConfig, device: torch.device) -> None:
        super().__init__()
        # Zeros grown on demand and reused: a fresh [rows, vocab] tensor each step would be the biggest
        # memory traffic of a step and distort what this model exists to measure.
        self.hidden = torch.zeros(0, config.hidden_size, device=device)
        self.logits = torch.zeros(0, config.vocab_size, device=device)

    @staticmethod
    def _rows(buffer: torch.Tensor, rows: int) -> torch.Tensor:
        # A new buffer, not resize_(): the sampler may have viewed the old one as a numpy array, which makes
        # its storage non-resizable.
        if buffer.shape[0] < rows:
            buffer = torch.zeros(rows, buffer.shape[1], device=buffer.device)
        return buffer

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        self.hidden = self._rows(self.hidden, input_ids.shape[0])
        return self.hidden[: input_ids.shape[0]]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        self.logits = self._rows(self.logits, hidden.shape[0])
        return self.logits[: hidden.shape[0]]
