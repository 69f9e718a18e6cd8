"""Executors: how the runner actor reaches the model runner(s). `start_executor` picks one from the config."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kvserve.config import EngineConfig
from kvserve.executor.base import Executor, WorkerDiedError
from kvserve.executor.in_process import InProcessExecutor
from kvserve.model.model_config import ModelConfig
from kvserve.model.registry import model_class
from kvserve.model.runner import ModelRunner, resolve_device
from kvserve.structured.compiler import GrammarCompiler

__all__ = ["Executor", "InProcessExecutor", "WorkerDiedError", "start_executor"]

logger = logging.getLogger(__name__)


def start_executor(
    config: EngineConfig, model_config: ModelConfig, model_dir: Path, grammars: GrammarCompiler | None
) -> Executor:
    """The model runner in this process (TP=1), or --tensor-parallel-size worker processes. Called on the
    runner actor's thread, where the TP=1 runner must live."""
    if config.tensor_parallel_size == 1:
        return InProcessExecutor(ModelRunner(config, model_config, model_dir, grammars))
    from kvserve.executor.multiprocess import MultiprocessExecutor

    device = resolve_device(config.device)
    check_tensor_parallel(config, model_config, device)
    return MultiprocessExecutor(config, model_config, model_dir, device, structured_outputs=grammars is not None)


def check_tensor_parallel(config: EngineConfig, model_config: ModelConfig, device: torch.device) -> None:
    """Refuses, before any worker starts, what tensor parallelism cannot serve."""
    size = config.tensor_parallel_size
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--tensor-parallel-size {size} uses GPUs 0..{size - 1}: leave --device as cuda or auto")
        visible = torch.cuda.device_count()
        if size > visible:
            raise ValueError(f"--tensor-parallel-size {size} needs {size} GPUs, but only {visible} are visible")
    else:
        logger.warning(
            "tensor parallelism on CPU (%d processes over gloo) is for testing: it is slower than one process",
            size,
        )
    if config.model.endswith(".gguf"):
        raise ValueError("GGUF models are served with --tensor-parallel-size 1 (their weights cannot be split yet)")
    if not getattr(model_class(model_config.architecture), "supports_tensor_parallel", False):
        raise ValueError(
            f"{model_config.architecture} does not support tensor parallelism: serve it with --tensor-parallel-size 1"
        )
    if model_config.quantization is not None:
        raise ValueError(
            f"quantized weights ({model_config.quantization.method}) cannot be split across ranks yet: serve "
            "quantized models with --tensor-parallel-size 1"
        )
    c = model_config
    for name, value in (
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
        ("intermediate_size", c.intermediate_size),
    ):
        if value % size:
            raise ValueError(f"the model's {name} ({value}) is not divisible by --tensor-parallel-size {size}")
