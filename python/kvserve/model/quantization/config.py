"""What a checkpoint's `quantization_config` (or `--quantization`) asks of the linear layers.

Two checkpoint layouts carry 8-bit weights with scales, both read here into one `QuantizationConfig`:

- `quant_method: "fp8"` (vLLM's and transformers' FP8 checkpoints): fp8 e4m3 weights with a per-tensor
  `weight_scale` per projection; `activation_scheme` "dynamic" or "static" (an `input_scale` per projection);
  `ignored_layers` / `modules_to_not_convert` stay in the checkpoint's dtype. Block-wise scales
  (`weight_block_size`) are refused.
- `quant_method: "compressed-tensors"` (llm-compressor's W8A8): one config group targeting `Linear`, weights of
  8 bits, `type` "float" (fp8 e4m3) or "int" (int8), symmetric, `strategy` "tensor" or "channel"
  (`weight_scale` [N, 1]); input activations of the same type quantized per token or per tensor; `ignore`
  lists module names or `re:` patterns.

Activations are always quantized dynamically per token: the most accurate of the schemes these layouts allow,
and what the scaled GEMMs take. A static `input_scale` is read and ignored (vLLM's static scheme rounds the
activations with one calibrated scale instead; the products differ by that rounding only).

`--quantization fp8` quantizes a 16- or 32-bit checkpoint's weights at load time, per output channel.

On CPU a bf16/f16 checkpoint served with --dtype auto keeps its weights in half precision
(`half_weights`: method "half", every projection and table in one stored format) with float32 activations.

A GGUF file converted by gguf_loader carries `quant_method: "gguf"` with each 2-D weight's GGML type and
rows (`tensors`: {module name: [type, rows]}): on CPU those weights stay in their blocks (types without a
kernel are dequantized to float32 at load, with a log line).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch

# --quantization values, as vLLM names them.
QUANTIZATION_METHODS = ("fp8",)

_TYPES = {"float": torch.float8_e4m3fn, "int": torch.int8}

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuantizationConfig:
    method: str  # "fp8" | "compressed-tensors" | "gguf" | "half": where the configuration came from
    # torch.float8_e4m3fn or torch.int8, also the activations' type; None for "gguf" and "half"
    weight_dtype: torch.dtype | None
    # True: the checkpoint holds 16/32-bit weights that are quantized once loaded (--quantization fp8).
    quantize_on_load: bool = False
    # Module names ("lm_head", "model.layers.0.mlp.down_proj") and `re:` patterns that stay unquantized.
    ignore: tuple[str, ...] = ()
    # "gguf": module name ("model.layers.0.mlp.up_proj", "model.embed_tokens") -> (stored format, rows), the
    # format a GGML type id with a CPU kernel (kvserve.ops.quant_kernels), F32 for the others.
    stored_formats: dict[str, tuple[int, int]] = field(default_factory=dict)
    # "half": the stored format (F16 or BF16) of every module not in stored_formats.
    default_format: int | None = None

    def __post_init__(self) -> None:
        if self.method in ("gguf", "half"):
            return
        if self.weight_dtype not in _TYPES.values():
            raise ValueError(f"8-bit weights are fp8 e4m3 or int8, not {self.weight_dtype}")

    def is_ignored(self, module_name: str) -> bool:
        """module_name: the checkpoint's name of a projection, e.g. "model.layers.0.self_attn.q_proj"."""
        for entry in self.ignore:
            if entry.startswith("re:"):
                if re.fullmatch(entry[3:], module_name):
                    return True
            elif module_name == entry or module_name.endswith("." + entry):
                return True
        return False

    @classmethod
    def for_method(cls, method: str) -> QuantizationConfig:
        """--quantization METHOD on an unquantized checkpoint."""
        if method not in QUANTIZATION_METHODS:
            raise ValueError(f"unsupported quantization {method!r}; choose one of {', '.join(QUANTIZATION_METHODS)}")
        return cls(method=method, weight_dtype=torch.float8_e4m3fn, quantize_on_load=True)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> QuantizationConfig | None:
        """The checkpoint's quantization_config, or None when it has none; raises ValueError for one this
        server cannot run."""
        qc = hf_config.get("quantization_config")
        if not qc:
            return None
        method = qc.get("quant_method")
        if method == "fp8":
            return _from_fp8(qc)
        if method == "compressed-tensors":
            return _from_compressed_tensors(qc)
        if method == "gguf":
            return _from_gguf(qc)
        raise ValueError(
            f"unsupported quantization_config quant_method {method!r}: kvserve serves 'fp8' and "
            "'compressed-tensors' (8-bit W8A8) checkpoints"
        )


def resolve_quantization(requested: str, from_checkpoint: QuantizationConfig | None) -> QuantizationConfig:
    """--quantization METHOD: quantize an unquantized checkpoint at load time; a quantized checkpoint keeps its
    own scheme, which the flag must name (vLLM refuses a method that disagrees with the checkpoint's)."""
    if from_checkpoint is None:
        return QuantizationConfig.for_method(requested)
    if from_checkpoint.method != requested:
        raise ValueError(
            f"--quantization {requested} does not match the checkpoint's quantization ({from_checkpoint.method})"
        )
    return from_checkpoint


def _from_fp8(qc: dict[str, Any]) -> QuantizationConfig:
    if qc.get("weight_block_size"):
        raise ValueError("fp8 checkpoints with block-wise weight scales (weight_block_size) are not supported")
    scheme = qc.get("activation_scheme", "dynamic")
    if scheme not in ("dynamic", "static"):
        raise ValueError(f"unknown fp8 activation_scheme {scheme!r}")
    ignore = tuple(qc.get("ignored_layers") or qc.get("modules_to_not_convert") or ())
    return QuantizationConfig(method="fp8", weight_dtype=torch.float8_e4m3fn, ignore=ignore)


def _from_compressed_tensors(qc: dict[str, Any]) -> QuantizationConfig:
    groups = list((qc.get("config_groups") or {}).values())
    if len(groups) != 1:
        raise ValueError(f"compressed-tensors: expected one config group, found {len(groups)}")
    group = groups[0]
    targets = group.get("targets") or []
    if targets != ["Linear"]:
        raise ValueError(f"compressed-tensors: the config group must target ['Linear'], not {targets}")
    weights = group.get("weights") or {}
    activations = group.get("input_activations")
    kind = weights.get("type")
    if (
        kind not in _TYPES
        or weights.get("num_bits") != 8
        or not weights.get("symmetric", True)
        or weights.get("strategy") not in ("tensor", "channel")
        or weights.get("dynamic", False)
    ):
        raise ValueError(
            "compressed-tensors: only 8-bit symmetric static weights with a per-tensor or per-channel scale "
            f"are supported, got {weights}"
        )
    if activations is None or activations.get("num_bits") != 8 or activations.get("type") != kind:
        raise ValueError(
            "compressed-tensors: only W8A8 (8-bit activations of the weights' type) is supported, "
            f"got input_activations {activations}"
        )
    if activations.get("strategy") not in ("token", "tensor") or not activations.get("symmetric", True):
        raise ValueError(f"compressed-tensors: unsupported input activation scheme {activations}")
    return QuantizationConfig(
        method="compressed-tensors", weight_dtype=_TYPES[kind], ignore=tuple(qc.get("ignore") or ())
    )


def half_weights(dtype: torch.dtype) -> QuantizationConfig:
    """Every weight kept as the checkpoint stores it, f16 or bf16, and multiplied in float32."""
    from kvserve.ops import quant_kernels

    formats = {torch.float16: quant_kernels.F16, torch.bfloat16: quant_kernels.BF16}
    return QuantizationConfig(method="half", weight_dtype=None, default_format=formats[dtype])


def stored_format(ggml_type: int) -> int:
    """The format a GGUF tensor of `ggml_type` is kept in on CPU: its own, or F32 when no kernel reads it."""
    from kvserve.ops import quant_kernels

    return ggml_type if ggml_type in quant_kernels.FORMATS_WITH_KERNEL else quant_kernels.F32


def _from_gguf(qc: dict[str, Any]) -> QuantizationConfig:
    formats = {}
    for name, (ggml_type, rows) in (qc.get("tensors") or {}).items():
        formats[name] = (stored_format(int(ggml_type)), int(rows))
        if formats[name][0] != ggml_type:
            logger.info(
                "GGUF tensor %s: no CPU kernel for GGML type %d; dequantized to float32 at load", name, ggml_type
            )
    return QuantizationConfig(method="gguf", weight_dtype=None, stored_formats=formats)
