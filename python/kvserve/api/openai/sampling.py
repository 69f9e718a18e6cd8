"""An OpenAI completions/chat body's sampling fields, in the front half's neutral terms."""

from __future__ import annotations

from kvserve.api.frontend.sampling import SamplingFields
from kvserve.api.openai.protocol_base import GenerationRequest
from kvserve.structured.spec import GrammarSpec


def sampling_fields(
    body: GenerationRequest,
    *,
    n: int,
    max_tokens: int | None,
    logprobs: int | None,
    prompt_logprobs: int | None,
    structured: GrammarSpec | None = None,
    skip_special_tokens: bool | None = None,
) -> SamplingFields:
    """The fields completions and chat name alike; the ones that differ between them come from the route (the
    output constraint: the body's structured-output fields, or chat's tool choice; special tokens: kept when a
    tool-call parser reads them)."""
    stop = body.stop
    return SamplingFields(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        n=n,
        max_tokens=max_tokens,
        min_tokens=body.min_tokens,
        seed=body.seed,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        allowed_token_ids=None if body.allowed_token_ids is None else tuple(body.allowed_token_ids),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=body.logit_bias,
        bad_words=tuple(body.bad_words),
        ignore_eos=body.ignore_eos,
        include_stop_str_in_output=body.include_stop_str_in_output,
        skip_special_tokens=body.skip_special_tokens if skip_special_tokens is None else skip_special_tokens,
        spaces_between_special_tokens=body.spaces_between_special_tokens,
        structured=structured,
    )
