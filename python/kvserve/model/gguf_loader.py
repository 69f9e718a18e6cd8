"""Serving a GGUF file (llama.cpp's single-file format): its configuration and tokenizer converted into a
Hugging Face directory, its weights read from the file itself.

Everything else in kvserve (`ModelConfig`, `Tokenizer`) reads Hugging Face layouts, so the metadata is
converted once and the result cached, keyed by the file's contents:

    <cache_root>/v2-<sha256 of the file>-<dtype>/
        config.json              architecture and sizes from the `<arch>.*` metadata keys, and a
                                 quantization_config {"quant_method": "gguf", "tensors": {module: [type, rows]}}
        generation_config.json   bos/eos ids (eos plus llama.cpp's end-of-turn ids)
        tokenizer.json           built with `tokenizers` from the `tokenizer.ggml.*` keys
        tokenizer_config.json    special tokens and `tokenizer.chat_template`
        model.gguf               a symbolic link to the file last served with these contents

A renamed or copied file reuses its directory (the link is pointed at it) and a changed file never does;
bump `_CONVERSION_VERSION` when what this module writes changes, so that old directories are not reused.
The directory appears by renaming a finished temporary directory, so a crash mid-conversion leaves only a
hidden `.v2-….tmp` sibling, never a half-written cache entry.

Weights (`iterate_gguf_weights`): on CPU the 2-D weights stay in their GGUF blocks (uint8 rows the kernels
of kvserve.ops.quant_kernels read); types without a kernel, 1-D tensors, and every tensor on other devices
are dequantized with gguf's numpy kernels, which compute in float32 (bit-identical to transformers' GGUF
loader, which uses the same kernels).

Supported `general.architecture` values: llama (which Mistral files use too), qwen2, qwen3. Supported
`tokenizer.ggml.model` values: gpt2 (byte-level BPE) and llama (SentencePiece-style BPE with byte fallback).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor, TokenType, quants
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from kvserve.model.quantization.config import stored_format

logger = logging.getLogger(__name__)

# Part of every cache directory's name: bump it when the converted output changes.
_CONVERSION_VERSION = 2
_GGUF_MAGIC = b"GGUF"
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_HASH_CHUNK_BYTES = 8 << 20
GGUF_LINK = "model.gguf"


@dataclass(frozen=True, slots=True)
class _Architecture:
    hf_architecture: str
    model_type: str
    # llama.cpp's converter reorders the rows of each Q/K head for its pairwise RoPE kernel, for llama only;
    # qwen2/qwen3 files use the NeoX kernel, which rotates halves like HF, and keep HF's order.
    permuted_qk: bool


_ARCHITECTURES = {
    "llama": _Architecture("LlamaForCausalLM", "llama", permuted_qk=True),
    "qwen2": _Architecture("Qwen2ForCausalLM", "qwen2", permuted_qk=False),
    "qwen3": _Architecture("Qwen3ForCausalLM", "qwen3", permuted_qk=False),
}

_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"(?:blk\.(?P<layer>\d+)\.)?(?P<part>\w+)\.(?P<kind>weight|bias)")
# Llama 3.1's rope scaling, stored as one divisor per rotary frequency instead of as parameters.
_ROPE_FACTORS_TENSOR = "rope_freqs.weight"


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvserve" / "gguf"


def gguf_to_hf_directory(
    gguf_path: str | Path, dtype: torch.dtype | None = None, cache_root: Path | None = None
) -> Path:
    """The HF-layout directory converted from `gguf_path` with weights in `dtype` (default float32).

    A cache hit costs one SHA-256 pass over the file (about 0.1 s per 100 MB). Raises ValueError for a
    file that is not GGUF, is truncated, or holds an unsupported architecture or tokenizer.
    """
    path = Path(gguf_path).expanduser()
    dtype = dtype or torch.float32
    if dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"cannot convert GGUF weights to {dtype}; choose one of {_SUPPORTED_DTYPES}")
    _check_magic(path)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = f"v{_CONVERSION_VERSION}-{_file_sha256(path)}-{_dtype_name(dtype)}"
    target = cache_root / key
    if target.is_dir():
        _link_file(target, path)
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_root))
    try:
        _convert(path, staging, dtype)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _link_file(target, path)
    logger.info("converted %s to %s in %.1f s", path, target, time.perf_counter() - started)
    return target


def _link_file(directory: Path, path: Path) -> None:
    """Points directory/model.gguf at `path`, replacing the link atomically when it names another file."""
    link, source = directory / GGUF_LINK, path.resolve()
    if link.is_symlink() and Path(os.readlink(link)) == source:
        return
    staging = directory / f".{GGUF_LINK}.{os.getpid()}.tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(source)
    os.replace(staging, link)


def _check_magic(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(len(_GGUF_MAGIC))
    except OSError as e:
        raise ValueError(f"cannot read GGUF file {path}: {e}") from e
    if magic != _GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it does not start with {_GGUF_MAGIC!r})")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _publish(staging: Path, target: Path) -> None:
    """Renames the finished directory into place; a concurrent conversion that got there first wins."""
    _fsync_files(staging)
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise


def _fsync_files(directory: Path) -> None:
    """Flushes the files before the rename, so a power loss cannot leave a published, truncated file."""
    for file in directory.iterdir():
        with file.open("rb") as f:
            os.fsync(f.fileno())


def _convert(path: Path, directory: Path, dtype: torch.dtype) -> None:
    reader = _open_reader(path)
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    if metadata.get("split.count", 1) > 1:
        raise ValueError(f"{path} is one part of a split GGUF model; merge the parts first (llama-gguf-split --merge)")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError(f"GGUF file {path} has no token_embd.weight tensor")
    architecture = _architecture(metadata)
    config = _hf_config(metadata, architecture, tensors, dtype)
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", _generation_config(metadata))
    _build_tokenizer(metadata).save(str(directory / "tokenizer.json"))
    _write_json(directory / "tokenizer_config.json", _tokenizer_config(metadata))


def _open_reader(path: Path) -> GGUFReader:
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as e:  # what gguf raises on a short or corrupt file
        raise ValueError(f"cannot read GGUF file {path}: truncated or corrupt ({e})") from e
    file_size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > file_size:
            raise ValueError(f"GGUF file {path} is truncated: tensor {tensor.name} ends past the end of the file")
    return reader


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _required(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise ValueError(f"GGUF metadata has no {key!r}")
    return metadata[key]


def _float32_value(value: float) -> float:
    """GGUF stores floats as float32: keep the shortest decimal of that float32 (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def _architecture(metadata: dict[str, Any]) -> _Architecture:
    name = _required(metadata, "general.architecture")
    if name not in _ARCHITECTURES:
        raise ValueError(f"GGUF architecture {name!r} is not supported; supported: {', '.join(sorted(_ARCHITECTURES))}")
    return _ARCHITECTURES[name]


def _hf_config(
    metadata: dict[str, Any], architecture: _Architecture, tensors: dict[str, ReaderTensor], dtype: torch.dtype
) -> dict[str, Any]:
    prefix = metadata["general.architecture"]

    def model_key(name: str, default: Any = None) -> Any:
        key = f"{prefix}.{name}"
        return _required(metadata, key) if default is None else metadata.get(key, default)

    hidden_size = int(model_key("embedding_length"))
    num_heads = int(model_key("attention.head_count"))
    head_dim = int(model_key("attention.key_length", hidden_size // num_heads))
    rope_theta = _float32_value(model_key("rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "architectures": [architecture.hf_architecture],
        "model_type": architecture.model_type,
        # The embedding's rows, not the tokenizer's length: the two differ when the matrix is padded.
        "vocab_size": _tensor_shape(tensors["token_embd.weight"])[0],
        "hidden_size": hidden_size,
        "intermediate_size": int(model_key("feed_forward_length")),
        "num_hidden_layers": int(model_key("block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(model_key("attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _float32_value(model_key("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(model_key("context_length")),
        "rope_theta": rope_theta,
        # llama.cpp writes no output matrix when the model reuses the embedding.
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in tensors,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
        "dtype": _dtype_name(dtype),
        "quantization_config": {"quant_method": "gguf", "tensors": _tensor_types(tensors)},
    }
    rope_scaling = _rope_scaling(metadata, prefix, tensors.get(_ROPE_FACTORS_TENSOR), rope_theta, head_dim)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def _tensor_shape(tensor: ReaderTensor) -> tuple[int, ...]:
    """GGUF lists dimensions fastest-first; torch lists them slowest-first."""
    return tuple(int(size) for size in reversed(tensor.shape))


def _rope_scaling(
    metadata: dict[str, Any], prefix: str, rope_factors: ReaderTensor | None, rope_theta: float, head_dim: int
) -> dict[str, Any] | None:
    if rope_factors is not None:
        return llama3_rope_scaling(np.asarray(rope_factors.data, dtype=np.float64), rope_theta, head_dim)
    kind = metadata.get(f"{prefix}.rope.scaling.type")
    factor = metadata.get(f"{prefix}.rope.scaling.factor")
    legacy_linear = metadata.get(f"{prefix}.rope.scale_linear")
    if kind is None and legacy_linear is not None:
        kind, factor = "linear", legacy_linear
    if kind in (None, "none") or factor in (None, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": _float32_value(factor)}
    if kind == "yarn":
        return _yarn_rope_scaling(metadata, prefix, factor)
    raise ValueError(f"GGUF rope scaling type {kind!r} is not supported; supported: none, linear, yarn")


def _yarn_rope_scaling(metadata: dict[str, Any], prefix: str, factor: float) -> dict[str, Any]:
    scaling: dict[str, Any] = {"rope_type": "yarn", "factor": _float32_value(factor)}
    optional = {
        "original_context_length": "original_max_position_embeddings",
        "yarn_beta_fast": "beta_fast",
        "yarn_beta_slow": "beta_slow",
    }
    for gguf_name, hf_name in optional.items():
        value = metadata.get(f"{prefix}.rope.scaling.{gguf_name}")
        if value is not None:
            scaling[hf_name] = int(value) if isinstance(value, int) else _float32_value(value)
    return scaling


def llama3_rope_scaling(rope_factors: np.ndarray, rope_theta: float, head_dim: int) -> dict[str, Any] | None:
    """HF's llama3 rope parameters that reproduce llama.cpp's per-frequency divisors (`rope_freqs.weight`).

    Each divisor is 1 for wavelengths under original_context / high_freq_factor, `factor` above
    original_context / low_freq_factor, and 1 / ((1 - s) / factor + s) between, where
    s = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor). Scaling
    original_context and both freq factors together changes no divisor, so low_freq_factor = 1 loses no
    generality; s is then a line in 1 / wavelength whose slope and intercept give the other two. The result
    is checked against every divisor, so a file this does not describe raises instead of loading wrongly.
    """
    factor = float(rope_factors.max())
    if factor == 1.0:
        return None
    wavelengths = 2 * math.pi * rope_theta ** (np.arange(0, head_dim, 2) / head_dim)
    between = (rope_factors > 1.0) & (rope_factors < factor)
    if between.sum() < 2:
        raise ValueError("rope_freqs.weight has fewer than two smoothed frequencies; cannot recover llama3 rope")
    smooth = (1 / rope_factors[between] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(1 / wavelengths[between], smooth, 1)
    if slope <= 0 or intercept >= 0:  # s grows with frequency; a positive low_freq_factor makes the intercept < 0
        raise ValueError("rope_freqs.weight does not follow llama3 rope scaling")
    high_freq_factor = round(1 - 1 / intercept, 4)
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": high_freq_factor,
        "original_max_position_embeddings": round(slope * (high_freq_factor - 1)),
    }
    if not np.allclose(_llama3_divisors(scaling, wavelengths), rope_factors, rtol=1e-4):
        raise ValueError(f"rope_freqs.weight does not follow llama3 rope scaling (closest fit: {scaling})")
    return scaling


def _llama3_divisors(scaling: dict[str, Any], wavelengths: np.ndarray) -> np.ndarray:
    original = scaling["original_max_position_embeddings"]
    low, high, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
    smooth = np.clip((original / wavelengths - low) / (high - low), 0.0, 1.0)
    return 1 / ((1 - smooth) / factor + smooth)


def _generation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp stops on any end-of-generation id (eos, end of turn, end of message): so does kvserve."""
    end_keys = [f"tokenizer.ggml.{name}_token_id" for name in ("eos", "eot", "eom")]
    end_ids = list(dict.fromkeys(metadata[key] for key in end_keys if key in metadata))
    return {
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": end_ids[0] if len(end_ids) == 1 else end_ids or None,
    }


def _hf_tensor_name(gguf_name: str) -> str:
    match = _TENSOR_NAME.fullmatch(gguf_name)
    if match is not None:
        layer, part = match["layer"], match["part"]
        table = _GLOBAL_TENSORS if layer is None else _LAYER_TENSORS
        if part in table:
            prefix = "" if layer is None else f"model.layers.{layer}."
            return f"{prefix}{table[part]}.{match['kind']}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart known to kvserve")


def _tensor_types(tensors: dict[str, ReaderTensor]) -> dict[str, list[int]]:
    """HF module name of each 2-D weight -> [its GGML type, its rows]."""
    types = {}
    for name, tensor in tensors.items():
        if name != _ROPE_FACTORS_TENSOR and len(tensor.shape) == 2:
            module = _hf_tensor_name(name).removesuffix(".weight")
            types[module] = [int(tensor.tensor_type), _tensor_shape(tensor)[0]]
    return types


def iterate_gguf_weights(path: Path, keep_formats: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """The file's tensors under Hugging Face names, one at a time. keep_formats: 2-D weights whose type
    has a CPU kernel come as their raw rows (uint8 [rows, row bytes]); everything else as float32."""
    reader = _open_reader(path)
    # The model's keys only: the tokenizer's arrays (tens of thousands of strings) are not needed here.
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}
    architecture = _architecture(metadata)
    prefix = metadata["general.architecture"]
    num_heads = {
        "attn_q": int(_required(metadata, f"{prefix}.attention.head_count")),
        "attn_k": int(metadata.get(f"{prefix}.attention.head_count_kv", metadata[f"{prefix}.attention.head_count"])),
    }
    # What each tensor's bytes are (the reader's view of them: its element type and shape) and where they lie. The
    # reader itself goes before any is read: its metadata objects (a 49k-token vocabulary's arrays: ~160 MiB)
    # would otherwise stay alive beside the weights, and bytes copied out of its mapping stay resident
    # (~the file) until the mapping goes. Reading them with a plain file read keeps neither (RESULTS.md, #14).
    tensors = [
        (t.name, t.tensor_type, _tensor_shape(t), t.data.dtype, t.data.shape, t.data_offset)
        for t in reader.tensors
        if t.name != _ROPE_FACTORS_TENSOR
    ]
    del reader
    with open(path, "rb") as file:
        for name, tensor_type, shape, dtype, data_shape, offset in tensors:
            data = _read_array(file, offset, dtype, data_shape, path)
            raw_type = int(tensor_type)
            if (
                keep_formats
                and len(shape) == 2
                and raw_type != GGMLQuantizationType.F32
                and stored_format(raw_type) == raw_type
            ):
                weight = torch.from_numpy(data).view(torch.uint8).reshape(shape[0], -1)
            else:
                values = np.require(quants.dequantize(data, tensor_type), requirements=["C", "W"])
                weight = torch.from_numpy(values).reshape(shape)
            part = name.split(".")[-2]
            if architecture.permuted_qk and part in num_heads:
                weight = _unpermute_rows(weight, num_heads[part]).contiguous()
            yield _hf_tensor_name(name), weight


def _read_array(file: BinaryIO, offset: int, dtype: np.dtype, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """The array of `dtype` and `shape` stored at `offset` of the open file."""
    array = np.empty(shape, dtype)
    file.seek(offset)
    if file.readinto(memoryview(array).cast("B")) != array.nbytes:
        raise ValueError(f"GGUF file {path} is truncated: a tensor ends past the end of the file")
    return array


def _unpermute_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undoes llama.cpp's Q/K row order. Its RoPE kernel rotates adjacent channels (0, 1), (2, 3), …, HF's
    rotates halves (0, d/2), (1, d/2 + 1), …, so the converter interleaved each head's two halves: row
    2j + p of a head holds HF row p * d/2 + j. Reading the head as [d/2, 2] and transposing restores it."""
    head_dim = weight.shape[0] // num_heads
    by_pair = weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
    return by_pair.transpose(1, 2).reshape(weight.shape)


# ---- tokenizer -------------------------------------------------------------------------------------------

# Pre-tokenizer regexes of the byte-level vocabularies llama.cpp names in `tokenizer.ggml.pre`. Llama 3 and
# Qwen2 split text alike except for numbers: pieces of up to three digits, or one digit.
_SPLIT_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_SPLIT_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = _SPLIT_WORDS + r"\p{N}{1,3}" + _SPLIT_REST
_QWEN2_SPLIT = _SPLIT_WORDS + r"\p{N}" + _SPLIT_REST


@dataclass(frozen=True, slots=True)
class _ByteLevelSplit:
    # A regex splitting text before byte-level BPE; None keeps GPT-2's own regex.
    split: str | None = None
    individual_digits: bool = False
    # Llama 3 takes a word that is itself a vocabulary entry whole, without running the merges.
    ignore_merges: bool = False


_BYTE_LEVEL_SPLITS = {
    "default": _ByteLevelSplit(),
    "gpt-2": _ByteLevelSplit(),
    "smollm": _ByteLevelSplit(individual_digits=True),
    "llama-bpe": _ByteLevelSplit(_LLAMA3_SPLIT, ignore_merges=True),
    "qwen2": _ByteLevelSplit(_QWEN2_SPLIT),
    "deepseek-r1-qwen": _ByteLevelSplit(_QWEN2_SPLIT),
}


def _build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    model = metadata.get("tokenizer.ggml.model")
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
    if model not in builders:
        raise ValueError(
            f"GGUF tokenizer model {model!r} is not supported; supported: gpt2 (byte-level BPE), "
            "llama (SentencePiece BPE)"
        )
    tokenizer = builders[model](metadata)
    tokens = _required(metadata, "tokenizer.ggml.tokens")
    types = _token_kinds(metadata)
    special = (TokenType.CONTROL, TokenType.UNKNOWN)
    # Control and user-defined tokens are matched whole in the text, before the model sees it.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind in special]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, types)
            if kind == TokenType.USER_DEFINED
        ]
    )
    tokenizer.post_processor = _bos_eos_template(metadata, tokens)
    return tokenizer


def _token_kinds(metadata: dict[str, Any]) -> list[int]:
    """Each token's llama.cpp type (normal, control, byte, …); a file without the list has only normal ones."""
    tokens = _required(metadata, "tokenizer.ggml.tokens")
    return metadata.get("tokenizer.ggml.token_type") or [int(TokenType.NORMAL)] * len(tokens)


def _gguf_merges(metadata: dict[str, Any]) -> list[tuple[str, str]] | None:
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        return None
    pairs = [merge.split(" ") for merge in merges]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("GGUF tokenizer.ggml.merges has an entry that is not two tokens separated by a space")
    return [(left, right) for left, right in pairs]


def _byte_level_bpe(metadata: dict[str, Any]) -> Tokenizer:
    tokens = _required(metadata, "tokenizer.ggml.tokens")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in _BYTE_LEVEL_SPLITS:
        logger.warning("GGUF pre-tokenizer %r is unknown to kvserve; splitting text the GPT-2 way", pre)
    split = _BYTE_LEVEL_SPLITS.get(pre, _BYTE_LEVEL_SPLITS["default"])
    merges = _gguf_merges(metadata)
    if merges is None:
        raise ValueError("GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges")
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges, ignore_merges=split.ignore_merges))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if split.individual_digits else []
    if split.split is not None:
        steps.append(pre_tokenizers.Split(Regex(split.split), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split.split is None))
    tokenizer.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(metadata: dict[str, Any]) -> Tokenizer:
    """SentencePiece BPE as llama.cpp's "llama" model runs it: spaces spelled "▁", unknown characters as
    <0xXX> byte tokens, and a "▁" before the text unless tokenizer.ggml.add_space_prefix is false."""
    tokens = _required(metadata, "tokenizer.ggml.tokens")
    merges = _gguf_merges(metadata) or _merges_from_scores(metadata)
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    unk = tokens[unk_id] if unk_id is not None else None
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    add_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    # "first": a "▁" before the text only, not again after each special token, as transformers does.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _merges_from_scores(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """SentencePiece files list no merges: every split of a normal token into two vocabulary entries is
    one, ranked by the merged token's score (best first), then longer left part, longer right part, and
    token ids, the order transformers uses for the same file."""
    tokens = _required(metadata, "tokenizer.ggml.tokens")
    scores = _required(metadata, "tokenizer.ggml.scores")
    types = _token_kinds(metadata)
    ids = {token: token_id for token_id, token in enumerate(tokens)}
    ranked = []
    for merged_id, (token, token_type) in enumerate(zip(tokens, types)):
        if token_type != TokenType.NORMAL:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[merged_id], -len(left), -len(right), merged_id, ids[left], ids[right]))
    ranked.sort()
    return [(tokens[left_id], tokens[right_id]) for *_, left_id, right_id in ranked]


def _adds_token(metadata: dict[str, Any], which: str) -> bool:
    """Whether encoding adds the bos/eos token; llama.cpp adds BOS to SentencePiece text unless told not to."""
    default = which == "bos" and metadata.get("tokenizer.ggml.model") == "llama"
    present = f"tokenizer.ggml.{which}_token_id" in metadata
    return present and bool(metadata.get(f"tokenizer.ggml.add_{which}_token", default))


def _bos_eos_template(metadata: dict[str, Any], tokens: list[str]) -> processors.TemplateProcessing:
    def added(which: str) -> dict[str, int]:
        token_id = metadata.get(f"tokenizer.ggml.{which}_token_id")
        return {tokens[token_id]: token_id} if _adds_token(metadata, which) else {}

    bos, eos = added("bos"), added("eos")
    return processors.TemplateProcessing(
        single=[*bos, "$A", *eos],
        pair=[*bos, "$A", *eos, *bos, "$B:1", *eos],
        special_tokens=list({**bos, **eos}.items()),
    )


def _tokenizer_config(metadata: dict[str, Any]) -> dict[str, Any]:
    tokens = _required(metadata, "tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[token_id] if token_id is not None else None

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "unk_token": token("unknown_token_id"),
        "pad_token": token("padding_token_id"),
        "add_bos_token": _adds_token(metadata, "bos"),
        "add_eos_token": _adds_token(metadata, "eos"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": metadata.get(f"{metadata['general.architecture']}.context_length"),
        "chat_template": metadata.get("tokenizer.chat_template"),
    }
