"""The model's architecture and generation defaults, read the way transformers reads them."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kvserve.model.encoders.sentence_transformers import PoolerConfig, read_pooler_config
from kvserve.model.quantization.config import QuantizationConfig
from kvserve.model.rope import RopeParameters, rope_parameters_from_hf_config

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}

# Sampling fields of generation_config.json that become request defaults (vLLM's --generation-config auto).
GENERATION_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    key = name.removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; choose one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[key]


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeParameters
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    # Per layer: the sliding attention window in tokens, or None for full attention.
    sliding_windows: tuple[int | None, ...] = ()
    dtype: torch.dtype = torch.float32
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    # 8-bit linear layers: the checkpoint's quantization_config, or --quantization (see load_model_config).
    quantization: QuantizationConfig | None = None
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False)
    pooler: PoolerConfig | None = None  # the sentence-transformers layout's pooling, when the model has one
    hf_generation_config: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if len(self.sliding_windows) != self.num_hidden_layers:
            raise ValueError("sliding_windows needs one entry per layer")

    @classmethod
    def from_dict(cls, config: dict[str, Any], generation_config: dict[str, Any] | None = None) -> ModelConfig:
        architectures = config.get("architectures") or []
        if not architectures:
            raise ValueError("config.json names no architecture ('architectures' is missing or empty)")
        arch = architectures[0]
        model_type = config.get("model_type", "")
        hf_config = config
        if model_type == "whisper":
            config = {**config, **_whisper_decoder_fields(config)}
        num_heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        head_dim = int(config.get("head_dim") or hidden // num_heads)
        num_layers = int(config["num_hidden_layers"])
        generation_config = generation_config or {}

        qwen2 = model_type == "qwen2" or arch.startswith("Qwen2")
        attention_bias = bool(config.get("attention_bias", False))
        dtype_name = config.get("dtype") or config.get("torch_dtype") or "float32"
        eos = _as_id_list(generation_config.get("eos_token_id")) or _as_id_list(config.get("eos_token_id"))
        bos = generation_config.get("bos_token_id", config.get("bos_token_id"))

        return cls(
            architecture=arch,
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or num_heads),
            head_dim=head_dim,
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            rope=rope_parameters_from_hf_config(config, head_dim),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama-style configs say so with attention_bias (o_proj too).
            qkv_bias=qwen2 or attention_bias,
            o_proj_bias=attention_bias and not qwen2,
            mlp_bias=bool(config.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3" or arch.startswith("Qwen3"),
            sliding_windows=_sliding_windows(config, num_layers),
            dtype=parse_dtype(str(dtype_name)),
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=tuple(eos),
            generation_defaults=generation_defaults(generation_config),
            quantization=QuantizationConfig.from_hf_config(hf_config),
            hf_config=hf_config,
            hf_generation_config=generation_config,
        )

    @classmethod
    def from_directory(cls, path: str | Path) -> ModelConfig:
        """config.json and, when present, generation_config.json (EOS ids and sampling defaults) and the
        sentence-transformers files (pooling)."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        config = cls.from_dict(json.loads(config_file.read_text()), read_generation_config(path))
        pooler = read_pooler_config(path)
        if pooler is None:
            return config
        # A sentence-transformers model serves inputs up to its max_seq_length (as vLLM does), not the
        # position table's size; longer inputs are refused or truncated on request, never silently.
        limit = min(config.max_position_embeddings, pooler.max_seq_length or config.max_position_embeddings)
        return dataclasses.replace(config, pooler=pooler, max_position_embeddings=limit)

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads


def read_generation_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def generation_defaults(generation_config: dict[str, Any]) -> dict[str, Any]:
    return {k: generation_config[k] for k in GENERATION_DEFAULT_FIELDS if generation_config.get(k) is not None}


def _whisper_decoder_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Whisper's decoder in Llama's terms: the decoder sizes the KV cache (its self-attention and, in the same
    blocks, its cross-attention) and the context length."""
    return {
        "hidden_size": config["d_model"],
        "intermediate_size": config["decoder_ffn_dim"],
        "num_hidden_layers": config["decoder_layers"],
        "num_attention_heads": config["decoder_attention_heads"],
        "num_key_value_heads": config["decoder_attention_heads"],
        "max_position_embeddings": config["max_target_positions"],
        "tie_word_embeddings": True,
    }


def _sliding_windows(config: dict[str, Any], num_layers: int) -> tuple[int | None, ...]:
    window = config.get("sliding_window")
    if config.get("use_sliding_window") is False or not window:
        window = None
    layer_types = config.get("layer_types")
    if layer_types:
        if len(layer_types) != num_layers:
            raise ValueError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
        return tuple(window if t == "sliding_attention" else None for t in layer_types)
    return (window,) * num_layers
