"""kvserve: an LLM inference server with a C++ scheduling core."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Loaded on first use: `import kvserve` (the CLI does it) must not pay for torch.
_LAZY = {
    "LLM": "kvserve.llm",
    "SamplingParams": "kvserve.sampling_params",
    "PoolingParams": "kvserve.request",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kvserve' has no attribute {name!r}")


__all__ = ["LLM", "PoolingParams", "SamplingParams", "__version__"]
