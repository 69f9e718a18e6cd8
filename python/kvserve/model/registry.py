"""Hugging Face `architectures` names -> kvserve model classes."""

from __future__ import annotations

from torch import nn

from kvserve.model.llama import LlamaForCausalLM

_CAUSAL_LM: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}


def supported_architectures() -> list[str]:
    return sorted(_CAUSAL_LM)


def model_class(architecture: str) -> type[nn.Module]:
    try:
        return _CAUSAL_LM[architecture]
    except KeyError:
        raise ValueError(
            f"model architecture {architecture!r} is not supported; supported: {', '.join(supported_architectures())}"
        ) from None
