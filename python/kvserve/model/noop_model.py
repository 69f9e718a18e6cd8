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
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.device = device

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0], self.hidden_size, device=self.device)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.zeros(hidden.shape[0], self.vocab_size, device=self.device)
