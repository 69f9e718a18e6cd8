"""Pooled vectors as JSON values: OpenAI's float lists and base64, and Cohere's embedding types.

float     the values (float32 widened to JSON numbers)
base64    the float32 values, little-endian, base64-encoded (what the openai SDK asks for and decodes)
int8      round(x * 127) of values clipped to [-1, 1]      (Cohere does not publish its quantiser; for
uint8     round((x + 1) * 127.5) of the same                 L2-normalised vectors this keeps the order)
binary    one sign bit per value (x >= 0 -> 1), 8 per byte, first value in the high bit, as int8
ubinary   the same bytes as uint8
"""

from __future__ import annotations

import base64

import numpy as np

from kvserve.api.frontend.validation import require

COHERE_EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def as_base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | list[list[float]] | str:
    return as_base64(vector) if encoding_format == "base64" else vector.tolist()


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
