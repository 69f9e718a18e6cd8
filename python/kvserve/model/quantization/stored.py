"""Weights kept in the format they were stored in (GGUF blocks, f16/bf16 rows), computed in float32 on CPU.

A fused projection (q|k|v, gate|up) may join tensors of different formats (a Q4_K_M file keeps attn_v in
Q6_K and attn_q in Q4_K): its weight is one uint8 matrix [out, row_stride] whose row stride is the widest
format's row, and each segment of rows is multiplied by the kernel of its own format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvserve.model.quantization import packed_weights
from kvserve.model.quantization.config import QuantizationConfig
from kvserve.model.quantization.linear import Linear, LinearMethod, _param
from kvserve.ops import quant_kernels
from kvserve.ops.quant_kernels import StoredWeight


class StoredLinearMethod(LinearMethod):
    """segments: (format, rows) of each checkpoint tensor fused into the layer, in row order; one segment of
    rows None when every part has the same format."""

    def __init__(self, segments: list[tuple[int, int | None]]) -> None:
        self.segments = segments

    def create_weights(self, layer: Linear) -> None:
        if self.segments[0][1] is None:
            self.segments = [(self.segments[0][0], layer.out_features)]
        if sum(rows for _, rows in self.segments) != layer.out_features:
            raise ValueError(f"stored segments {self.segments} do not cover {layer.out_features} rows")
        self.row_stride = max(quant_kernels.row_bytes(fmt, layer.in_features) for fmt, _ in self.segments)
        layer.weight = _param(torch.empty(layer.out_features, self.row_stride, dtype=torch.uint8))

    def checkpoint_tensor(self, kind: str, tensor: torch.Tensor, rows: int) -> tuple[str, torch.Tensor] | None:
        if kind != "weight":
            return kind, tensor
        stored = tensor.contiguous().view(torch.uint8).reshape(rows, -1)
        # A segment of a narrower format than the widest one fused with it: zero bytes the kernel never reads.
        return kind, F.pad(stored, (0, self.row_stride - stored.shape[1]))

    def stored_weights(self, layer: Linear) -> list[StoredWeight]:
        weights, row0 = [], 0
        for fmt, rows in self.segments:
            weights.append(StoredWeight(layer.weight.data, fmt, rows, layer.in_features, row0))
            row0 += rows
        return weights

    def finish_loading(self, layer: Linear) -> None:
        layer.stored = self.stored_weights(layer)

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, layer.in_features)
        rows = (rows if rows.dtype == torch.float32 else rows.float()).contiguous()
        out = torch.empty(rows.shape[0], layer.out_features)
        column = 0
        for weight in layer.stored:
            quant_kernels.matmul_into(out[:, column : column + weight.out_features], rows, weight)
            column += weight.out_features
        if layer.bias is not None:
            out += layer.bias
        return out.view(*x.shape[:-1], layer.out_features).to(x.dtype)


def stored_linear_method(config: QuantizationConfig, checkpoint_names: list[str]) -> LinearMethod:
    """The method of a projection kept in its stored formats, or plain float32 when every part is float32."""
    segments = [config.stored_formats.get(name, (config.default_format, None)) for name in checkpoint_names]
    missing = [name for name, (fmt, _) in zip(checkpoint_names, segments) if fmt is None]
    if missing:
        raise ValueError(f"checkpoint has no weight for {', '.join(missing)}")
    if all(fmt == quant_kernels.F32 for fmt, _ in segments):
        return LinearMethod()
    if len({fmt for fmt, _ in segments}) == 1:
        return StoredLinearMethod([(segments[0][0], None)])
    return StoredLinearMethod(segments)


def table_parameter(config: QuantizationConfig | None, name: str, rows: int, cols: int) -> nn.Parameter:
    """An embedding table or LM head [rows, cols]: float in the model's dtype, or stored rows (uint8, with
    its format as the parameter's `stored_format`) when the checkpoint keeps it quantized."""
    fmt = None if config is None else config.stored_formats.get(name, (config.default_format, 0))[0]
    if fmt is None or fmt == quant_kernels.F32:
        return _param(torch.empty(rows, cols))
    param = _param(torch.empty(rows, quant_kernels.row_bytes(fmt, cols), dtype=torch.uint8))
    param.stored_format = fmt
    param.stored_cols = cols
    param.compute_dtype = torch.get_default_dtype()  # the model's dtype while it is built: what rows come out in
    return param


def _table(param: nn.Parameter) -> StoredWeight:
    return StoredWeight(param.data, param.stored_format, param.shape[0], param.stored_cols)


def embed(ids: torch.Tensor, table: nn.Parameter) -> torch.Tensor:
    """F.embedding over a float or stored table."""
    if getattr(table, "stored_format", None) is None:
        return F.embedding(ids, table)
    return quant_kernels.embedding(ids, _table(table)).to(table.compute_dtype)


def table_logits(hidden: torch.Tensor, table: nn.Parameter) -> torch.Tensor:
    """hidden · tableᵀ (the LM head) over a float or stored table."""
    if getattr(table, "stored_format", None) is None:
        return packed_weights.linear(hidden, table)
    return quant_kernels.matmul(hidden, _table(table))
