"""The sentence-transformers layout of a model directory: how its embeddings are pooled and normalised.

    modules.json                  the pipeline: Transformer, Pooling (path "1_Pooling"), optionally Normalize
    1_Pooling/config.json         pooling_mode_cls_token | pooling_mode_mean_tokens | pooling_mode_lasttoken
    sentence_bert_config.json     max_seq_length: the longest input the model was trained for
    config_sentence_transformers.json   prompts: text prepended per input kind ("query", "document", ...)

A module that changes the vectors in a way kvserve does not implement (Dense projections, max pooling) is an
error at start, never a silently different embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvserve.request import PoolingType

_MODULE_PREFIX = "sentence_transformers.models."
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
# 1_Pooling/config.json flag -> kvserve pooling; flags of pooling modes kvserve lacks are refused.
_POOLING_MODES: dict[str, PoolingType] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
}
_UNSUPPORTED_MODES = (
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
)


@dataclass(frozen=True, slots=True)
class PoolerConfig:
    """A model's own pooling defaults; a field is None when the model does not say."""

    pooling: PoolingType | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def read_pooler_config(directory: Path) -> PoolerConfig | None:
    """The sentence-transformers pooling of `directory`, or None when it has no modules.json."""
    modules = _read_json(directory / "modules.json")
    if modules is None:
        return None
    pooling: PoolingType | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).removeprefix(_MODULE_PREFIX)
        if kind not in _SUPPORTED_MODULES:
            raise ValueError(
                f"sentence-transformers module {module.get('type')!r} ({module.get('path')}) is not supported; "
                f"supported: {', '.join(_SUPPORTED_MODULES)}"
            )
        if kind == "Pooling":
            pooling = _pooling_mode(_read_json(directory / module.get("path", "") / "config.json") or {})
        normalize |= kind == "Normalize"
    st_config = _read_json(directory / "sentence_bert_config.json") or {}
    max_seq_length = st_config.get("max_seq_length")
    prompts = (_read_json(directory / "config_sentence_transformers.json") or {}).get("prompts") or {}
    return PoolerConfig(pooling, normalize, int(max_seq_length) if max_seq_length else None, dict(prompts))


def _pooling_mode(config: dict[str, Any]) -> PoolingType | None:
    unsupported = [flag for flag in _UNSUPPORTED_MODES if config.get(flag)]
    if unsupported:
        raise ValueError(f"sentence-transformers pooling {', '.join(unsupported)} is not supported")
    chosen = [pooling for flag, pooling in _POOLING_MODES.items() if config.get(flag)]
    if len(chosen) > 1:
        raise ValueError(f"sentence-transformers pooling combines {chosen}; kvserve pools one way per model")
    return chosen[0] if chosen else None
