"""Pooling requests -> engine requests -> pooled rows: the part every pooling route shares.

A route names its prompts (texts, token ids or text pairs) and its PoolingParams; this submits one
prefill-only engine request per prompt together (so the scheduler batches them under its token budget),
awaits them all and aborts the rest if one fails or the client leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import render_conversation
from kvserve.api.frontend.engine_requests import truncation
from kvserve.api.frontend.generations import collect, open_all
from kvserve.api.frontend.validation import require
from kvserve.api.openai.protocol_base import UsageInfo, random_id
from kvserve.api.pooling.protocol import InputFields, PoolingRequestBase
from kvserve.errors import InvalidRequestError
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest, PoolingParams, TextPair, Truncation

Prompt = str | list[int] | TextPair


@dataclasses.dataclass(frozen=True, slots=True)
class Pooled:
    """The pooled rows of one API request's prompts, in prompt order."""

    values: list[np.ndarray]
    num_prompt_tokens: int

    @property
    def usage(self) -> UsageInfo:
        return UsageInfo(prompt_tokens=self.num_prompt_tokens, total_tokens=self.num_prompt_tokens)


def input_prompts(value: object, param: str = "input") -> list[str | list[int]]:
    """The four input forms: a string, strings, token ids, or lists of token ids; none of them empty."""
    if value is None or value == "" or value == []:
        raise InvalidRequestError(f"{param} must not be empty.", param)
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, int) for v in value):
        return [list(value)]
    require(all(len(v) > 0 for v in value), f"{param} must not contain empty strings or token lists.", param)
    return list(value)


def request_prompts(body: InputFields, ctx: ServingContext) -> tuple[list[str | list[int]], bool]:
    """The prompts of an `input` or `messages` body, and whether to add special tokens to them."""
    if body.messages is not None:
        require(body.input is None, "Give either input or messages, not both.", "messages")
        add_special = False if body.add_special_tokens is None else body.add_special_tokens
        return [render_conversation(body.conversation(), ctx)], add_special
    add_special = True if body.add_special_tokens is None else body.add_special_tokens
    return input_prompts(body.input), add_special


@dataclasses.dataclass(frozen=True, slots=True)
class EncodeOptions:
    """What every engine request of one API request shares."""

    request_id: str | None = None
    priority: int = 0
    truncation: Truncation | None = None
    add_special_tokens: bool = True

    @staticmethod
    def of(body: PoolingRequestBase, add_special_tokens: bool = True) -> EncodeOptions:
        return EncodeOptions(
            body.request_id,
            body.priority,
            truncation(body.truncate_prompt_tokens, body.truncation_side),
            add_special_tokens,
        )


async def encode(
    ctx: ServingContext, prompts: Sequence[Prompt], params: PoolingParams, options: EncodeOptions
) -> Pooled:
    """Runs `prompts` as prefill-only requests with `params`, all submitted at once."""
    base_id = options.request_id or random_id()
    requests = [
        EngineRequest(
            f"{base_id}-{i}",
            prompt,
            pooling=params,
            priority=options.priority,
            add_special_tokens=options.add_special_tokens,
            truncation=options.truncation,
        )
        for i, prompt in enumerate(prompts)
    ]
    generations, accepted = await open_all(ctx.engine, requests)
    outputs: list[RequestOutput] = await collect(generations, accepted)
    return Pooled([o.pooled for o in outputs], sum(o.num_prompt_tokens for o in outputs))


def embed_params(ctx: ServingContext, dimensions: int | None, normalize: bool | None) -> PoolingParams:
    """Embedding parameters with the model's defaults; `dimensions` only for Matryoshka models (vLLM's rule:
    cutting other models' vectors gives poor embeddings)."""
    tasks = ctx.engine.model_tasks
    if dimensions is not None:
        hf = ctx.engine.model_config.hf_config
        name = ctx.settings.model_name
        require(dimensions >= 1, "Dimensions must be greater than 0", "dimensions")
        require(
            bool(hf.get("is_matryoshka") or hf.get("matryoshka_dimensions")),
            f'Model "{name}" does not support matryoshka representation, changing output dimensions will lead '
            "to poor results.",
            "dimensions",
        )
        allowed = hf.get("matryoshka_dimensions")
        require(
            not allowed or dimensions in allowed,
            f'Model "{name}" only supports {allowed} matryoshka dimensions, use other output dimensions will '
            "lead to poor results.",
            "dimensions",
        )
    return PoolingParams(
        kind="embed", normalize=tasks.default_normalize if normalize is None else normalize, dimensions=dimensions
    )
