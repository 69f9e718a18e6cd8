"""The one place a prepared request becomes the C++ core's RequestParams, field by field, by name."""

from __future__ import annotations

from kvserve import _core
from kvserve.request import PreparedRequest


def core_request_params(prepared: PreparedRequest) -> _core.RequestParams:
    request = prepared.request
    sampling = request.sampling
    pooling = request.pooling
    encoder_input = request.encoder_input
    # Prompt logprobs, and pooling over every prompt position, need each position computed, so such a
    # request reads no cached prefix (it still registers its blocks for others).
    skip_prefix_cache = (sampling is not None and sampling.prompt_logprobs is not None) or (
        pooling is not None and pooling.needs_every_position
    )
    # A grammar's next bitmask needs the previous token on the host: such a request waits for it instead of
    # being scheduled with its token in flight.
    allow_overlap = sampling is None or sampling.structured is None
    return _core.RequestParams(
        task=_core.TaskKind(int(request.task)),
        max_tokens=prepared.max_tokens,
        min_tokens=min(sampling.min_tokens, prepared.max_tokens) if sampling is not None else 0,
        eos_token_ids=list(prepared.eos_token_ids),
        stop_token_ids=list(sampling.stop_token_ids) if sampling is not None else [],
        ignore_eos=sampling.ignore_eos if sampling is not None else False,
        priority=request.priority,
        arrival_time=request.arrival_time,
        cache_salt=request.cache_salt or "",
        skip_prefix_cache=skip_prefix_cache,
        num_encoder_tokens=encoder_input.num_encoder_tokens if encoder_input is not None else 0,
        allow_overlap=allow_overlap,
    )
