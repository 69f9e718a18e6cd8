"""Finding a model's files (local directory or Hugging Face repo id) and reading its safetensors."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import finish_loading
from kvserve.model.registry import model_class

logger = logging.getLogger(__name__)

# What a serving run needs from a Hugging Face repo (no PyTorch .bin or consolidated duplicates).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


def resolve_model_dir(model: str, revision: str | None = None) -> Path:
    """A local directory as is; a .gguf file converted (once, cached) into one; anything else is a Hugging
    Face repo id, downloaded (or taken from the cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        from kvserve.model.gguf_loader import gguf_to_hf_directory

        logger.info("converting %s (cached after the first start)", path)
        return gguf_to_hf_directory(path)
    if path.exists():
        raise ValueError(f"{model} is neither a model directory nor a .gguf file")
    from huggingface_hub import snapshot_download

    logger.info("downloading %s from the Hugging Face Hub", model)
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # the hub raises many types: offline, 404, gated, bad id
        raise ValueError(f"cannot load model {model!r}: not a local directory, and the Hub said: {e}") from e


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {model_dir}")
    return files


def keeps_stored_formats(config: ModelConfig, device: torch.device) -> bool:
    """GGUF blocks run on the CPU kernels; elsewhere (or without the "gguf" config) they are dequantized."""
    return device.type == "cpu" and config.quantization is not None and config.quantization.method == "gguf"


def model_weights(model_dir: Path, config: ModelConfig, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """The checkpoint's tensors: from the GGUF file a converted directory links to, or from its safetensors."""
    gguf = model_dir / "model.gguf"
    if gguf.exists():
        from kvserve.model.gguf_loader import iterate_gguf_weights

        return iterate_gguf_weights(gguf, keep_formats=keeps_stored_formats(config, device))
    return iterate_safetensors(safetensors_files(model_dir))


def iterate_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Memory-mapped tensors, one at a time, so a load never holds two copies of the model."""
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(
    config: ModelConfig, weights: Iterator[tuple[str, torch.Tensor]] | None, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    """Allocates the model on `device` in `dtype` and fills it from `weights`, or with random values
    (normal, std 0.02; norms at 1) when `weights` is None: --load-format dummy, for speed runs. Random weights of
    a quantized model are drawn in `dtype` and quantized, as --quantization does."""
    gguf = config.quantization is not None and config.quantization.method == "gguf"
    if gguf and (weights is None or not keeps_stored_formats(config, device)):
        config = dataclasses.replace(config, quantization=None)  # random or dequantized weights: plain layers
    elif weights is None and config.quantization is not None:
        quantization = dataclasses.replace(config.quantization, quantize_on_load=True)
        config = dataclasses.replace(config, quantization=quantization)
    cls = model_class(config.architecture)
    with torch.device(device), _default_dtype(dtype):
        model = cls(config)
    if weights is None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() == 1:
                    param.fill_(1.0 if "norm" in name or "layernorm" in name else 0.0)
                else:
                    param.normal_(0.0, 0.02)
    else:
        model.load_weights(weights)
    finish_loading(model)
    return model.eval()
