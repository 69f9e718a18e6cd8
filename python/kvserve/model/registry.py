"""Hugging Face `architectures` names -> kvserve model classes, and which tasks each class serves.

Every model class declares the task kinds it supports (`kvserve.request.TaskKind`), the pooling kinds of its
prefill-only rows (`PoolingParams.kind`) and its default pooling; the engine refuses what the model cannot
serve before the request reaches the core.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kvserve.model.llama import LlamaForCausalLM
from kvserve.model.whisper.model import WhisperForConditionalGeneration
from kvserve.request import EngineRequest, PoolingType, TaskKind

_MODELS: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
    "WhisperForConditionalGeneration": WhisperForConditionalGeneration,
}


@dataclass(frozen=True, slots=True)
class ModelTasks:
    """What one model class can produce."""

    tasks: frozenset[TaskKind]
    pooling_kinds: frozenset[str]  # PoolingParams.kind values its prefill-only rows support
    default_pooling: PoolingType  # PoolingParams.pooling None means this

    @staticmethod
    def of(cls: type[nn.Module]) -> ModelTasks:
        return ModelTasks(cls.supported_tasks, cls.pooling_kinds, cls.default_pooling)

    def unsupported(self, request: EngineRequest) -> str | None:
        """Why this model cannot serve `request`, or None when it can."""
        if request.task not in self.tasks:
            return f"this model does not support {request.task.name.lower()} requests"
        if request.pooling is not None and request.pooling.kind not in self.pooling_kinds:
            return f"this model does not support pooling kind {request.pooling.kind!r}"
        return None


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def model_class(architecture: str, task: TaskKind | None = None) -> type[nn.Module]:
    """The class for `architecture`; with `task`, a ValueError too when that class cannot serve it."""
    try:
        cls = _MODELS[architecture]
    except KeyError:
        raise ValueError(
            f"model architecture {architecture!r} is not supported; supported: {', '.join(supported_architectures())}"
        ) from None
    if task is not None and task not in cls.supported_tasks:
        raise ValueError(f"model architecture {architecture!r} does not support {task.name.lower()} requests")
    return cls


def model_tasks(architecture: str) -> ModelTasks:
    return ModelTasks.of(model_class(architecture))
