"""Pooled vectors as JSON values: OpenAI's float lists and base64, and Cohere's embedding types.

float     the values (float32 widened to JSON numbers)
base64    the values' bytes, base64-encoded: float32 in the machine's byte order by default (what the
          openai SDK asks for and decodes); vLLM's `embed_dtype` (float16, bfloat16) and `endianness`
          (little, big) choose others
int8      round(x * 127) of values clipped to [-1, 1]      (Cohere does not publish its quantiser; for
uint8     round((x + 1) * 127.5) of the same                 L2-normalised vectors this keeps the order)
binary    one sign bit per value (x >= 0 -> 1), 8 per byte, first value in the high bit, as int8
ubinary   the same bytes as uint8
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from kvserve.api.frontend.validation import require

EmbedDType = Literal["float32", "float16", "bfloat16"]
Endianness = Literal["native", "little", "big"]
# Each dtype's torch type and the integer type of the same width its bits are written as.
_DTYPES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "float32": (torch.float32, torch.int32),
    "float16": (torch.float16, torch.int16),
    "bfloat16": (torch.bfloat16, torch.int16),
}


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a response writes its vectors."""

    format: Literal["float", "base64"] = "float"
    dtype: EmbedDType = "float32"  # base64 only
    endianness: Endianness = "native"  # base64 only


def as_base64(vector: np.ndarray, dtype: EmbedDType = "float32", endianness: Endianness = "little") -> str:
    torch_dtype, bits = _DTYPES[dtype]
    raw = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32)).to(torch_dtype).view(bits).numpy()
    if (sys.byteorder if endianness == "native" else endianness) != sys.byteorder:
        raw = raw.byteswap()
    return base64.b64encode(raw.tobytes()).decode("ascii")


def encode_vector(vector: np.ndarray, encoding: Encoding) -> list[float] | list[list[float]] | str:
    if encoding.format == "base64":
        return as_base64(vector, encoding.dtype, encoding.endianness)
    return vector.tolist()


def _quantize(vectors: np.ndarray, embedding_type: str) -> np.ndarray:
    clipped = np.clip(vectors, -1.0, 1.0)
    if embedding_type == "int8":
        return np.rint(clipped * 127.0).astype(np.int8)
    if embedding_type == "uint8":
        return np.rint((clipped + 1.0) * 127.5).astype(np.uint8)
    require(
        vectors.shape[-1] % 8 == 0,
        f"binary embedding types need a dimension that is a multiple of 8, got {vectors.shape[-1]}.",
        "embedding_types",
    )
    packed = np.packbits(vectors >= 0, axis=-1)
    return packed.view(np.int8) if embedding_type == "binary" else packed


def typed_embeddings(vectors: list[np.ndarray], embedding_types: list[str]) -> dict[str, list]:
    """Cohere's `embeddings` object: one list of vectors per requested type."""
    matrix = np.stack(vectors).astype(np.float32)
    result: dict[str, list] = {}
    for embedding_type in embedding_types:
        if embedding_type == "float":
            result["float"] = matrix.tolist()
        elif embedding_type == "base64":
            result["base64"] = [as_base64(row) for row in matrix]
        else:
            result[embedding_type] = _quantize(matrix, embedding_type).tolist()
    return result
