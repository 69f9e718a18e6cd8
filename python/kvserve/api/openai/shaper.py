"""Turning one OpenAI request's engine outputs into its response body or its SSE events.

ShaperBase owns the stream loop every OpenAI generation API shares (choices merged as they come, usage and
fingerprint placement, the final usage chunk, [DONE]); chat, completions and responses fill in small hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import BaseModel
from quart import Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.generations import Generation, collect, merge
from kvserve.api.openai.protocol_base import GenerationRequest, now
from kvserve.api.openai.request_options import RequestOptions
from kvserve.api.openai.usage import usage
from kvserve.api.responses import json_response
from kvserve.api.sse import DONE
from kvserve.api.streaming import stream_response
from kvserve.outputs import RequestOutput


class ShaperBase(ABC):
    """What every shaper knows about its request (body, options, answering model, settings), and the stream
    loop. Choice `index` is the position of its generation in the list the route opened."""

    def __init__(
        self,
        body: GenerationRequest,
        options: RequestOptions,
        model: str,
        accepted: list[RequestOutput],
        ctx: ServingContext,
    ) -> None:
        self.body = body
        self.options = options
        self.model = model
        self.created = now()
        self.accepted = accepted
        self.as_token_ids = bool(body.return_tokens_as_token_ids or ctx.settings.return_tokens_as_token_ids)
        self.fingerprint = ctx.settings.system_fingerprint

    # -- per-API hooks --------------------------------------------------------------------------------
    @property
    @abstractmethod
    def logprobs_requested(self) -> bool: ...

    @abstractmethod
    def response(self, results: list[RequestOutput]) -> BaseModel:
        """The non-streamed body, from each choice's outputs merged into one."""

    @abstractmethod
    def usage_of(self, results: list[RequestOutput]) -> BaseModel:
        """The usage block of the response (each API has its own)."""

    @abstractmethod
    def chunk(self, choices: list[Any], **extra: Any) -> bytes:
        """One SSE chunk of these stream choices; `extra` holds top-level fields (usage, fingerprint)."""

    @abstractmethod
    def delta_choice(self, index: int, output: RequestOutput, text: str, first: bool, text_offset: int) -> Any:
        """The stream choice of one delta; `first` marks the choice's first delta, `text_offset` counts the
        characters its earlier chunks sent."""

    @abstractmethod
    def plain_chunk(self, index: int, text: str) -> bytes:
        """The hot path: a text-only delta, byte-identical to chunk([delta_choice(...)])."""

    @property
    def text_only_deltas(self) -> bool:
        """Whether a middle delta may be a plain text chunk (False when deltas carry other fields, such as
        parsed tool calls or reasoning)."""
        return True

    def delta_text(self, index: int, output: RequestOutput, first: bool) -> str:
        return output.text

    def worth_sending(self, index: int, text: str, output: RequestOutput, first: bool) -> bool:
        return bool(text or output.token_ids or output.finished)

    def opening_chunks(self, num_choices: int) -> Iterator[bytes]:
        """Sent once, just before the first delta."""
        return iter(())

    def closing_chunks(self) -> Iterator[bytes]:
        """Sent once, after the last delta: the usage chunk when asked for, then [DONE]."""
        if self.options.include_usage:
            yield self.chunk([], usage=self.usage_of(self.accepted), system_fingerprint=self.fingerprint)
        yield DONE

    # -- the loop -------------------------------------------------------------------------------------
    async def respond(self, generations: list[Generation], stream: bool) -> Response:
        if stream:
            return stream_response(self.stream(generations))
        return json_response(self.response(await collect(generations, self.accepted)))

    async def stream(self, generations: list[Generation]) -> AsyncIterator[bytes]:
        options = self.options
        # Only a delta with nothing but text may take the hot path; first and last deltas carry more.
        plain = self.text_only_deltas and not (
            self.logprobs_requested or self.body.return_token_ids or options.continuous_usage
        )
        started = [False] * len(generations)
        sent_chars = [0] * len(generations)
        opened = False
        async for index, output in merge(generations):
            self.accepted[index].merge(output)
            first = not started[index]
            started[index] = True
            text = self.delta_text(index, output, first)
            if not self.worth_sending(index, text, output, first):
                continue
            if not opened:
                opened = True
                for chunk in self.opening_chunks(len(generations)):
                    yield chunk
            if plain and not first and not output.finished:
                chunk = self.plain_chunk(index, text)
            else:
                extra: dict[str, Any] = {}
                if options.continuous_usage:
                    extra["usage"] = usage(output.num_prompt_tokens, output.num_output_tokens, None)
                if output.finished and not options.include_usage:
                    extra["system_fingerprint"] = self.fingerprint
                chunk = self.chunk([self.delta_choice(index, output, text, first, sent_chars[index])], **extra)
            sent_chars[index] += len(text)
            yield chunk
        for chunk in self.closing_chunks():
            yield chunk
