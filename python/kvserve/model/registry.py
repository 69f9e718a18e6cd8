"""Hugging Face `architectures` names -> kvserve model classes, and which tasks each class serves.

Every model class declares the task kinds it supports (`kvserve.request.TaskKind`), the pooling kinds of its
prefill-only rows (`PoolingParams.kind`) and its default pooling; the engine refuses what the model cannot
serve before the request reaches the core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from torch import nn

from kvserve.model.encoders.bert import BertForSequenceClassification, BertModel, ColBERTModel
from kvserve.model.encoders.sentence_transformers import PoolerConfig
from kvserve.model.llama import LlamaForCausalLM
from kvserve.model.whisper.model import WhisperForConditionalGeneration
from kvserve.request import EngineRequest, PoolingType, TaskKind

_MODELS: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
    # Encoders (prefill-only, no KV cache). Qwen3-Embedding-style decoder embedders are the CausalLM
    # classes above served with --runner pooling (or found by their sentence-transformers files).
    "BertModel": BertModel,
    "BertForSequenceClassification": BertForSequenceClassification,
    "HF_ColBERT": ColBERTModel,
    "WhisperForConditionalGeneration": WhisperForConditionalGeneration,
}

Runner = Literal["generate", "pooling"]
RUNNERS = ("auto", "generate", "pooling")
# Task kinds whose outputs are generated text: such a model is served by the generative API families.
_GENERATIVE = frozenset({TaskKind.GENERATE, TaskKind.ENCODER_DECODER})


@dataclass(frozen=True, slots=True)
class ModelTasks:
    """What one served model produces."""

    tasks: frozenset[TaskKind]
    pooling_kinds: frozenset[str]  # PoolingParams.kind values its prefill-only rows support
    default_pooling: PoolingType  # PoolingParams.pooling None means this
    default_normalize: bool = True  # embeddings are L2-normalised unless the model or the request says not
    uses_kv_cache: bool = True  # False: an encoder, whose requests attend only within one step
    runner: Runner = "generate"  # which API families the server answers for this model

    @staticmethod
    def of(cls: type[nn.Module]) -> ModelTasks:
        return ModelTasks(
            cls.supported_tasks,
            cls.pooling_kinds,
            cls.default_pooling,
            uses_kv_cache=getattr(cls, "uses_kv_cache", True),
            runner="generate" if cls.supported_tasks & _GENERATIVE else "pooling",
        )

    def served_as(self, runner: str, pooler: PoolerConfig | None) -> ModelTasks:
        """These tasks under `--runner` (auto: pooling for encoders and for models with sentence-transformers
        files, generation otherwise), with the model's own pooling defaults."""
        if runner == "auto":
            runner = "pooling" if pooler is not None else self.runner
        if runner == "generate" and not self.tasks & _GENERATIVE:
            raise ValueError("--runner generate: this model cannot generate text (it is a pooling model)")
        if runner not in ("generate", "pooling"):
            raise ValueError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        served = dataclasses.replace(self, runner=runner)
        if runner == "pooling":
            served = dataclasses.replace(served, tasks=frozenset({TaskKind.PREFILL_ONLY}))
        if pooler is not None:
            served = dataclasses.replace(
                served,
                default_pooling=pooler.pooling or served.default_pooling,
                default_normalize=served.default_normalize if pooler.normalize is None else pooler.normalize,
            )
        return served

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
