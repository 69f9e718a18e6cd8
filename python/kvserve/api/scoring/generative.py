"""POST /generative_scoring: for each item, the probability that the model's next token after query + item
(item + query with item_first) is the first of `label_token_ids`.

Each item is one prefill-only engine request whose output row is the next-token log-probabilities of the
label tokens (PoolingParams kind "next_token"): no token is sampled. With apply_softmax the label tokens'
probabilities are renormalised among themselves; without, they are the model's own over the vocabulary.
"""

from __future__ import annotations

import asyncio

import numpy as np
from quart import Blueprint, Response, request

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.protocol_base import UsageInfo, random_id
from kvserve.api.responses import json_response
from kvserve.api.scoring.generative_protocol import (
    GenerativeScoringItemResult,
    GenerativeScoringRequest,
    GenerativeScoringResponse,
)
from kvserve.request import EngineRequest, PoolingParams

bp = Blueprint("generative_scoring", __name__)

MAX_ITEMS = 1024


def label_probabilities(logprobs: np.ndarray, apply_softmax: bool) -> np.ndarray:
    """logprobs: [L] log-probabilities of the label tokens over the vocabulary."""
    logprobs = logprobs.astype(np.float64)
    if not apply_softmax:
        return np.exp(logprobs)
    shifted = np.exp(logprobs - logprobs.max())
    return shifted / shifted.sum()


def prompt_token_ids(body: GenerativeScoringRequest, ctx: ServingContext) -> list[list[int]]:
    tokenizer = ctx.engine.tokenizer
    query = body.query
    query_ids = tokenizer.encode(query, add_special_tokens=body.add_special_tokens) if isinstance(query, str) else query
    prompts = []
    for item in body.items:
        # Items never get special tokens: they continue the query (or the query continues them).
        item_ids = tokenizer.encode(item, add_special_tokens=False) if isinstance(item, str) else item
        prompts.append(item_ids + query_ids if body.item_first else query_ids + item_ids)
    return prompts


@bp.post("/generative_scoring")
async def generative_scoring() -> Response:
    body = await parse_json_body(GenerativeScoringRequest)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    vocab_size = ctx.engine.model_config.vocab_size
    require(bool(body.label_token_ids), "label_token_ids must contain at least one token ID.", "label_token_ids")
    bad = [t for t in body.label_token_ids if not 0 <= t < vocab_size]
    require(
        not bad,
        f"label_token_id {bad[0] if bad else ''} is out of vocabulary range [0, {vocab_size}). "
        "Please provide valid token IDs.",
        "label_token_ids",
    )
    require(bool(body.items), "items must contain at least one item.", "items")
    require(len(body.items) <= MAX_ITEMS, f"items accepts at most {MAX_ITEMS} items.", "items")
    require(
        body.priority == 0 or ctx.engine.config.scheduling_policy == "priority",
        f"Got priority {body.priority} but Priority scheduling is not enabled.",
        "priority",
    )
    request_id = f"generative-scoring-{request.headers.get('X-Request-Id') or body.request_id or random_id()}"
    pooling = PoolingParams(kind="next_token", token_ids=tuple(body.label_token_ids))
    requests = [
        EngineRequest(f"{request_id}-{i}", prompt, pooling=pooling, priority=body.priority)
        for i, prompt in enumerate(prompt_token_ids(body, ctx))
    ]
    outputs = await asyncio.gather(*(ctx.engine.encode(r) for r in requests))
    data = [
        GenerativeScoringItemResult(index=i, score=float(label_probabilities(output.pooled, body.apply_softmax)[0]))
        for i, output in enumerate(outputs)
    ]
    prompt_tokens = sum(output.num_prompt_tokens for output in outputs)
    response = GenerativeScoringResponse(
        id=request_id,
        model=model,
        data=data,
        usage=UsageInfo(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens, completion_tokens=0),
    )
    return json_response(response)
