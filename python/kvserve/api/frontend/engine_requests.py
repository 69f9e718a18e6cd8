"""Engine requests for one API request: one per prompt and choice, each otherwise alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from kvserve.api.frontend.validation import require
from kvserve.errors import InvalidRequestError
from kvserve.request import EngineRequest, SampleGroup, Truncation
from kvserve.sampling_params import SamplingParams

if TYPE_CHECKING:  # annotations only: the API modules import (and are tested with fakes) without the engine
    from kvserve.engine import AsyncEngine


def admit(engine: AsyncEngine, num_requests: int) -> None:
    """The admission check of an API request that becomes `num_requests` engine requests (prompts x n), made
    before it is rendered or tokenized: a full queue or a draining server answers 503 before that work."""
    engine.admission.check(num_requests)


def request_timeout(asked: float | None, server_timeout: float | None) -> float | None:
    """A request's own timeout (seconds): it may shorten the server's --request-timeout, never extend it."""
    if asked is None:
        return None
    require(
        server_timeout is None or asked <= server_timeout,
        f"request_timeout ({asked:g} s) must not exceed the server's --request-timeout ({server_timeout} s).",
        "request_timeout",
    )
    return asked


def truncation(keep: int | None, side: Literal["left", "right"] | None) -> Truncation | None:
    """truncate_prompt_tokens / truncation_side; whether `keep` fits the context is the engine's check (it
    knows the prompt's length and max_tokens)."""
    if keep is None:
        return None
    try:
        return Truncation(keep, side or "left")
    except ValueError as e:
        raise InvalidRequestError(str(e), "truncate_prompt_tokens") from None


def fan_out(
    base: EngineRequest, prompts: Sequence[str | list[int]], choice_params: Sequence[SamplingParams]
) -> list[EngineRequest]:
    """One engine request per prompt and choice (id `<base id>-<prompt>-<choice>`), in choice order; all keep
    the rest of `base` (priority, cache salt, truncation, arrival time). A prompt's n > 1 choices form a
    SampleGroup."""
    n = len(choice_params)
    return [
        dataclasses.replace(
            base,
            request_id=f"{base.request_id}-{i}-{j}",
            prompt=prompt,
            sampling=params,
            samples=SampleGroup(f"{base.request_id}-{i}", n) if n > 1 else None,
        )
        for i, prompt in enumerate(prompts)
        for j, params in enumerate(choice_params)
    ]
