"""Request-level options completions and chat share (ids, usage reporting, priority, cache salt), and their
engine requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quart import request

from kvserve.api.context import ServingContext
from kvserve.api.frontend.engine_requests import fan_out, request_timeout, truncation
from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.openai.protocol_base import GenerationRequest, random_id
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class RequestOptions:
    request_id: str
    include_usage: bool
    continuous_usage: bool
    prompt_tokens_details: bool
    timeout: float | None = None  # the request's own `request_timeout` (the engine applies its default)

    @staticmethod
    def prompt_logprobs_payload(output: RequestOutput) -> list[dict[int, dict] | None] | None:
        """vLLM's prompt_logprobs: per prompt token (None for the first) {token id: logprob, rank, token}."""
        if output.prompt_logprobs is None:
            return None
        payload: list[dict[int, dict] | None] = []
        for position in output.prompt_logprobs:
            if position is None:
                payload.append(None)
                continue
            entries = {}
            for lp in (position.sampled, *position.top):
                entries.setdefault(
                    lp.token_id, {"logprob": lp.logprob, "rank": lp.rank, "decoded_token": lp.decoded_token}
                )
            payload.append(entries)
        return payload


def request_options(
    body: GenerationRequest, ctx: ServingContext, *, stream: bool, request_id_prefix: str
) -> RequestOptions:
    """Checks the options that do not depend on the prompt; the id is the prefix (e.g. "chatcmpl-", "resp_") and
    a base that honours X-Request-Id."""
    settings = ctx.settings
    require(
        body.stream_options is None or stream,
        "Stream options can only be defined when `stream=True`.",
        "stream_options",
    )
    require(
        body.priority == 0 or ctx.engine.config.scheduling_policy == "priority",
        f"Got priority {body.priority} but Priority scheduling is not enabled.",
        "priority",
    )
    require(
        body.cache_salt is None or (isinstance(body.cache_salt, str) and 0 < len(body.cache_salt) <= 1024),
        "Parameter 'cache_salt' must be a non-empty string of at most 1024 characters if provided.",
        "cache_salt",
    )
    require(
        not (stream and body.prompt_logprobs is not None),
        "`prompt_logprobs` are not available when `stream=True`.",
        "prompt_logprobs",
    )
    unsupported = body.unsupported_fields()
    if unsupported:
        raise NotImplementedFeature(
            f"{', '.join(unsupported)} {'is' if len(unsupported) == 1 else 'are'} not supported by this server yet.",
            unsupported[0],
        )
    base_id = request.headers.get("X-Request-Id") or body.request_id or random_id()
    stream_options = body.stream_options
    include_usage = bool(stream_options and stream_options.include_usage) or settings.enable_force_include_usage
    return RequestOptions(
        request_id=f"{request_id_prefix}{base_id}",
        include_usage=stream and include_usage,
        continuous_usage=stream and include_usage and bool(stream_options and stream_options.continuous_usage_stats),
        prompt_tokens_details=settings.enable_prompt_tokens_details,
        timeout=request_timeout(body.request_timeout, ctx.engine.config.request_timeout),
    )


def engine_requests(
    body: GenerationRequest,
    options: RequestOptions,
    prompts: Sequence[str | list[int]],
    choice_params: Sequence[SamplingParams],
) -> list[EngineRequest]:
    base = EngineRequest(
        request_id=options.request_id,
        prompt=prompts[0],
        sampling=choice_params[0],
        priority=body.priority,
        cache_salt=body.cache_salt,
        add_special_tokens=body.add_special_tokens,
        truncation=truncation(body.truncate_prompt_tokens, body.truncation_side),
        timeout=options.timeout,
    )
    return fan_out(base, prompts, choice_params)
