"""The usage block, with cached prompt tokens when --enable-prompt-tokens-details is on."""

from __future__ import annotations

from kvserve.api.openai.protocol_base import PromptTokensDetails, UsageInfo


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=None if cached_tokens is None else PromptTokensDetails(cached_tokens=cached_tokens),
    )
