"""Quantized weights: the checkpoint's (or --quantization's) configuration and the linear-layer methods."""

from __future__ import annotations

from kvserve.model.quantization.config import QUANTIZATION_METHODS, QuantizationConfig, resolve_quantization
from kvserve.model.quantization.linear import Int8Fp8LinearMethod, Linear, LinearMethod, finish_loading, linear_method
from kvserve.model.quantization.stored import StoredLinearMethod, embed, table_logits, table_parameter

__all__ = [
    "QUANTIZATION_METHODS",
    "Int8Fp8LinearMethod",
    "Linear",
    "LinearMethod",
    "QuantizationConfig",
    "StoredLinearMethod",
    "embed",
    "finish_loading",
    "linear_method",
    "resolve_quantization",
    "table_logits",
    "table_parameter",
]
