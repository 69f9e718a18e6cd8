"""Relevance scores of text pairs, by what the served model is:

    cross-encoder      a classifier with one label reads each pair as one sequence (TextPair: token types
                       0 then 1); the score is its sigmoid (or the logit, use_activation false)
    bi-encoder         an embedding model embeds every text once; the score is the cosine similarity
    late interaction   a token-embedding model (ColBERT) embeds every token; the score is MaxSim: for each
                       query token the best dot product with a document token, summed over query tokens

Pairs follow vLLM's rule: one first text against N second texts (1:1, 1:N), or N against N, pairwise.
"""

from __future__ import annotations

import numpy as np

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.api.pooling.capabilities import CLASSIFY, TOKEN_EMBED, served_apis
from kvserve.api.pooling.encode import EncodeOptions, Pooled, encode
from kvserve.request import PoolingParams, TextPair


def score_pairs(num_first: int, num_second: int) -> list[tuple[int, int]]:
    require(num_first >= 1 and num_second >= 1, "Both sides of a score request need at least one text.", "text_1")
    if num_first == 1:
        return [(0, j) for j in range(num_second)]
    require(num_first == num_second, "Input lengths must be either 1:1, 1:N or N:N", "text_1")
    return [(i, i) for i in range(num_first)]


async def score(
    ctx: ServingContext, first: list[str], second: list[str], options: EncodeOptions, activation: bool
) -> tuple[list[float], int]:
    """The score of each pair (in score_pairs order) and the prompt tokens computed."""
    pairs = score_pairs(len(first), len(second))
    apis = served_apis(ctx.engine)
    if CLASSIFY in apis:
        prompts = [TextPair(first[i], second[j]) for i, j in pairs]
        pooled = await encode(ctx, prompts, PoolingParams(kind="classify", activation=activation), options)
        return [float(v[0]) for v in pooled.values], pooled.num_prompt_tokens
    late_interaction = TOKEN_EMBED in apis
    params = PoolingParams(kind="embed", pooling="all" if late_interaction else None, normalize=True)
    pooled: Pooled = await encode(ctx, first + second, params, options)
    queries, documents = pooled.values[: len(first)], pooled.values[len(first) :]
    measure = _max_sim if late_interaction else _cosine
    return [measure(queries[i], documents[j]) for i, j in pairs], pooled.num_prompt_tokens


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def _max_sim(query: np.ndarray, document: np.ndarray) -> float:
    """query [m, d], document [n, d], rows L2-normalised."""
    return float((query @ document.T).max(axis=1).sum())
