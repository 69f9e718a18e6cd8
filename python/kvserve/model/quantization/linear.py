"""The linear-layer seam: every projection of a model is a `Linear`, and its `LinearMethod` decides how the
weight is stored and how `x @ W^T + b` is computed. Unquantized layers call F.linear (on CPU, oneDNN
on a packed weight); 8-bit layers quantize the
activations per token and run the scaled GEMM (CUTLASS on CUDA, the float32 reference on CPU). Another storage
(GGUF blocks, say) is one more method: `create_weights`, `checkpoint_tensor`, `finish_loading`, `apply`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from kvserve import ops
from kvserve.model.quantization import packed_weights
from kvserve.model.quantization.config import QuantizationConfig

logger = logging.getLogger(__name__)


def _param(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


class LinearMethod:
    """Unquantized: a weight [out, in] in the model's dtype; on CPU packed for oneDNN once it is loaded."""

    def create_weights(self, layer: Linear) -> None:
        layer.weight = _param(torch.empty(layer.out_features, layer.in_features))

    def checkpoint_tensor(self, kind: str, tensor: torch.Tensor, rows: int) -> tuple[str, torch.Tensor] | None:
        """A checkpoint tensor of this layer (kind: the name's last part, e.g. "weight", "bias",
        "weight_scale") covering `rows` output rows: the parameter it fills and the tensor to copy into
        those rows, or None to skip it."""
        return kind, tensor

    def finish_loading(self, layer: Linear) -> None:
        """Called once every parameter is filled (from a checkpoint or with random values)."""
        if packed_weights.packable(layer.weight):
            layer.weight = packed_weights.packed_parameter(layer.weight.data)

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        return packed_weights.linear(x, layer.weight, layer.bias)


class Int8Fp8LinearMethod(LinearMethod):
    """W8A8: weight [out, in] in fp8 e4m3 or int8 with a float32 scale per output row; activations quantized
    dynamically per token. Per-tensor checkpoint scales become rows of that vector, which is how the separate
    scales of q, k and v (or gate and up) survive the fusion into one matrix."""

    def __init__(self, config: QuantizationConfig) -> None:
        self.dtype = config.weight_dtype
        self.quantize_on_load = config.quantize_on_load

    def create_weights(self, layer: Linear) -> None:
        if self.quantize_on_load:  # the checkpoint's own weights first; finish_loading quantizes them
            super().create_weights(layer)
            return
        layer.weight = _param(torch.empty(layer.out_features, layer.in_features, dtype=self.dtype))
        layer.weight_scale = _param(torch.empty(layer.out_features, dtype=torch.float32))

    def checkpoint_tensor(self, kind: str, tensor: torch.Tensor, rows: int) -> tuple[str, torch.Tensor] | None:
        if kind == "input_scale":  # static activation scales: activations are quantized per token instead
            return None
        if kind == "weight_scale" and not self.quantize_on_load:
            if tensor.numel() == 1:
                return kind, tensor.float().reshape(1).expand(rows)
            if tensor.numel() == rows:
                return kind, tensor.float().reshape(rows)
            raise ValueError(f"weight_scale of shape {tuple(tensor.shape)} is neither per tensor nor per row ({rows})")
        return kind, tensor

    def finish_loading(self, layer: Linear) -> None:
        if self.quantize_on_load:
            weight, scale = ops.dynamic_quantize(layer.weight.data, self.dtype)
            layer.weight = _param(weight)
            layer.weight_scale = _param(scale)

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        q, scale = ops.dynamic_quantize(rows, self.dtype)
        out = ops.scaled_mm(q, layer.weight, scale, layer.weight_scale, x.dtype, layer.bias)
        return out.view(*x.shape[:-1], layer.out_features)


class Linear(nn.Module):
    """y = x @ W^T + b, computed by `method`: the one place a model's projection multiplies."""

    def __init__(self, in_features: int, out_features: int, bias: bool, method: LinearMethod) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.method = method
        method.create_weights(self)
        self.bias = _param(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.apply(self, x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {type(self.method).__name__}"


def linear_method(config: QuantizationConfig | None, checkpoint_names: list[str]) -> LinearMethod:
    """The method of a projection fused from the checkpoint modules `checkpoint_names` (q/k/v, gate/up);
    all of them are quantized or none."""
    if config is None:
        return LinearMethod()
    if config.method in ("gguf", "half"):
        from kvserve.model.quantization.stored import stored_linear_method  # it subclasses LinearMethod

        return stored_linear_method(config, checkpoint_names)
    ignored = [config.is_ignored(name) for name in checkpoint_names]
    if any(ignored) and not all(ignored):
        raise ValueError(f"quantization ignores only some of {', '.join(checkpoint_names)}, which are fused")
    return LinearMethod() if all(ignored) else Int8Fp8LinearMethod(config)


def finish_loading(model: nn.Module) -> None:
    """Lets every layer that converts its loaded weights (quantize on load, pack) do so."""
    for module in model.modules():
        if isinstance(module, Linear):
            module.method.finish_loading(module)
        elif hasattr(module, "finish_loading"):
            module.finish_loading()
