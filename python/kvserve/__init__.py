"""kvserve: an LLM inference server with a C++ scheduling core."""

from __future__ import annotations

from kvserve.lazy_names import lazy_getattr

__version__ = "0.1.0"

# Loaded on first use: `import kvserve` (the CLI does it) must not pay for torch.
_LAZY = {
    "LLM": "kvserve.llm",
    "SamplingParams": "kvserve.sampling_params",
    "PoolingParams": "kvserve.request",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["LLM", "PoolingParams", "SamplingParams", "__version__"]
