"""POST /v1/completions (OpenAI legacy completions, with vLLM's extras)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.engine_requests import admit
from kvserve.api.frontend.generations import open_all
from kvserve.api.frontend.sampling import per_choice_params, sampling_params
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.completion_protocol import (
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from kvserve.api.openai.logprobs import completion_logprobs
from kvserve.api.openai.protocol_base import UsageInfo
from kvserve.api.openai.request_options import RequestOptions, engine_requests, request_options
from kvserve.api.openai.sampling import sampling_fields
from kvserve.api.openai.shaper import ShaperBase
from kvserve.api.openai.stream_chunks import completion_text_event
from kvserve.api.openai.structured_fields import grammar_spec
from kvserve.api.openai.usage import usage
from kvserve.api.sse import sse_event
from kvserve.errors import InvalidRequestError
from kvserve.outputs import RequestOutput
from kvserve.sampling_params import DEFAULT_MAX_TOKENS

MAX_PROMPTS = 128

bp = Blueprint("openai_completions", __name__)


def prompts_of(prompt: object) -> list[str | list[int]]:
    """The four prompt forms: a string, strings, token ids, or lists of token ids."""
    if prompt is None or prompt == "" or prompt == []:
        raise InvalidRequestError("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    require(
        len(prompt) <= MAX_PROMPTS, f"prompt list length {len(prompt)} exceeds the maximum of {MAX_PROMPTS}.", "prompt"
    )
    require(all(len(p) > 0 for p in prompt), "prompts in a list must not be empty.", "prompt")
    return list(prompt)


@bp.post("/v1/completions")
async def create_completion() -> Response:
    body = await parse_json_body(CompletionRequest)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    require(body.suffix is None, "suffix is not currently supported", "suffix")
    prompts = prompts_of(body.prompt)
    options = request_options(body, ctx, stream=bool(body.stream), request_id_prefix="cmpl-")
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    echo_only = bool(body.echo) and max_tokens == 0  # sampling_params refuses other values below 1
    logprobs = body.logprobs
    fields = sampling_fields(
        body,
        n=body.n,
        max_tokens=1 if echo_only else max_tokens,
        logprobs=logprobs,
        # Echo with logprobs reports the prompt's logprobs too.
        prompt_logprobs=body.prompt_logprobs if body.prompt_logprobs is not None else (logprobs if body.echo else None),
        structured=grammar_spec(body),
    )
    params = sampling_params(fields, ctx)
    admit(ctx.engine, len(prompts) * body.n)
    requests = engine_requests(body, options, prompts, per_choice_params(params, body.n))
    generations, accepted = await open_all(ctx.engine, requests)
    shaper = _Completion(body, options, model, prompts, accepted, echo_only, ctx)
    return await shaper.respond(generations, bool(body.stream))


class _Completion(ShaperBase):
    """Shapes one completion request's outputs: choice index = prompt index * n + sample index."""

    body: CompletionRequest

    def __init__(
        self,
        body: CompletionRequest,
        options: RequestOptions,
        model: str,
        prompts: list[str | list[int]],
        accepted: list[RequestOutput],
        echo_only: bool,
        ctx: ServingContext,
    ) -> None:
        super().__init__(body, options, model, accepted, ctx)
        self.echo_only = echo_only
        self.tokenizer = ctx.engine.tokenizer
        self.prompt_texts = [
            p if isinstance(p, str) else self.tokenizer.decode(accepted[i * body.n].prompt_token_ids, False)
            for i, p in enumerate(prompts)
        ]

    @property
    def logprobs_requested(self) -> bool:
        return self.body.logprobs is not None

    def _prompt_text(self, index: int) -> str:
        return self.prompt_texts[index // self.body.n]

    def _logprobs(
        self, index: int, output: RequestOutput, text_offset: int, with_prompt: bool
    ) -> CompletionLogProbs | None:
        if self.body.logprobs is None:
            return None
        positions = list(output.prompt_logprobs or []) if with_prompt else []
        first_prompt_token = ""
        if positions and positions[0] is None:  # the first prompt token: a token and an offset, no logprob
            token_id = output.prompt_token_ids[0]
            first_prompt_token = (
                f"token_id:{token_id}" if self.as_token_ids else self.tokenizer.decode([token_id], False)
            )
        if not self.echo_only:
            positions += output.logprobs or []
        return completion_logprobs(positions, self.body.logprobs, text_offset, self.as_token_ids, first_prompt_token)

    def delta_text(self, index: int, output: RequestOutput, first: bool) -> str:
        prefix = self._prompt_text(index) if self.body.echo and first else ""
        return prefix + ("" if self.echo_only else output.text)

    def worth_sending(self, index: int, text: str, output: RequestOutput, first: bool) -> bool:
        # A choice's first chunk is always sent: it carries the echoed prompt and prompt_token_ids.
        return first or super().worth_sending(index, text, output, first)

    def usage_of(self, results: list[RequestOutput]) -> UsageInfo:
        prompt_tokens = sum(r.num_prompt_tokens for r in results[:: self.body.n])
        completion_tokens = sum(0 if self.echo_only else r.num_output_tokens for r in results)
        cached = sum(r.num_cached_tokens for r in results[:: self.body.n])
        return usage(prompt_tokens, completion_tokens, cached if self.options.prompt_tokens_details else None)

    def response(self, results: list[RequestOutput]) -> CompletionResponse:
        choices = []
        for index, result in enumerate(results):
            choices.append(
                CompletionResponseChoice(
                    index=index,
                    text=self.delta_text(index, result, first=True),
                    logprobs=self._logprobs(index, result, 0, with_prompt=bool(self.body.echo)),
                    finish_reason="length" if self.echo_only else result.finish_reason,
                    stop_reason=None if self.echo_only else result.stop_reason,
                    token_ids=result.token_ids if self.body.return_token_ids else None,
                    prompt_logprobs=self.options.prompt_logprobs_payload(result),
                    prompt_token_ids=result.prompt_token_ids if self.body.return_token_ids else None,
                )
            )
        return CompletionResponse(
            id=self.options.request_id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage_of(results),
            system_fingerprint=self.fingerprint,
        )

    def chunk(self, choices: list[CompletionResponseStreamChoice], **extra: Any) -> bytes:
        chunk = CompletionStreamResponse(
            id=self.options.request_id, created=self.created, model=self.model, choices=choices, **extra
        )
        return sse_event(chunk.model_dump())

    def plain_chunk(self, index: int, text: str) -> bytes:
        return completion_text_event(self.options.request_id, self.created, self.model, index, text)

    def delta_choice(
        self, index: int, output: RequestOutput, text: str, first: bool, text_offset: int
    ) -> CompletionResponseStreamChoice:
        finished = output.finished
        return CompletionResponseStreamChoice(
            index=index,
            text=text,
            logprobs=self._logprobs(index, output, text_offset, with_prompt=first and bool(self.body.echo)),
            finish_reason=("length" if self.echo_only else output.finish_reason) if finished else None,
            stop_reason=output.stop_reason if finished and not self.echo_only else None,
            prompt_token_ids=output.prompt_token_ids if first and self.body.return_token_ids else None,
            token_ids=output.token_ids if self.body.return_token_ids else None,
        )
