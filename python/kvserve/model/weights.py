"""Checkpoint tensors into model parameters, with a record of what was filled."""

from __future__ import annotations

import torch
from torch import nn


class WeightAssembler:
    """Copies tensors into (row ranges of) parameters and checks at the end that every row was written."""

    def __init__(self, model: nn.Module) -> None:
        self.params = dict(model.named_parameters())
        self.rows_filled = {name: 0 for name in self.params}
        self.unexpected: list[str] = []

    def load(self, name: str, tensor: torch.Tensor, part: int = 0) -> None:
        """A full checkpoint tensor (of fused part `part`) into parameter `name`, through the parameter's
        `weight_loader` when it has one: (tensor, part) -> (the share this process holds, its row offset)."""
        loader = getattr(self.params.get(name), "weight_loader", None)
        if loader is None:
            self.copy(name, tensor)
        else:
            self.copy(name, *loader(tensor, part))

    def copy(self, name: str, tensor: torch.Tensor, row_offset: int = 0) -> None:
        param = self.params.get(name)
        if param is None:
            self.unexpected.append(name)
            return
        if param.dtype == torch.uint8 and tensor.dtype != torch.uint8:  # rows kept as stored take their bytes
            tensor = tensor.contiguous().view(torch.uint8)
        target = param.data[row_offset : row_offset + tensor.shape[0]] if param.dim() else param.data
        if target.shape != tensor.shape:
            raise ValueError(
                f"checkpoint tensor for {name} (rows from {row_offset}) has shape {tuple(tensor.shape)}, "
                f"expected {tuple(target.shape)}"
            )
        target.copy_(tensor)
        self.rows_filled[name] += tensor.shape[0] if param.dim() else 1

    def finish(self) -> None:
        if self.unexpected:
            raise ValueError(
                f"checkpoint has tensors this model does not use: {', '.join(sorted(self.unexpected)[:10])}"
            )
        missing = [
            name
            for name, param in self.params.items()
            if self.rows_filled[name] != (param.shape[0] if param.dim() else 1)
        ]
        if missing:
            raise ValueError(f"checkpoint is missing weights for: {', '.join(sorted(missing)[:10])}")
