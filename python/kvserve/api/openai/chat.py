"""POST /v1/chat/completions (OpenAI chat, with vLLM's extras)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import render_conversation
from kvserve.api.frontend.engine_requests import admit
from kvserve.api.frontend.generations import open_all
from kvserve.api.frontend.sampling import per_choice_params, sampling_params
from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.chat_protocol import (
    ChatCompletionLogProbs,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaMessage,
)
from kvserve.api.openai.logprobs import chat_logprobs
from kvserve.api.openai.protocol_base import UsageInfo
from kvserve.api.openai.request_options import RequestOptions, engine_requests, request_options
from kvserve.api.openai.sampling import sampling_fields
from kvserve.api.openai.shaper import ShaperBase
from kvserve.api.openai.stream_chunks import chat_content_event
from kvserve.api.openai.usage import usage
from kvserve.api.sse import sse_event
from kvserve.errors import InvalidRequestError
from kvserve.outputs import RequestOutput

bp = Blueprint("openai_chat", __name__)


def render_prompt(body: ChatCompletionRequest, ctx: ServingContext) -> str:
    if body.tool_choice == "auto" and body.tools:
        raise InvalidRequestError(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', "tool_choice"
        )
    if body.tool_choice not in (None, "none", "auto"):
        raise NotImplementedFeature("tool_choice 'required' or a named tool is not supported yet.", "tool_choice")
    return render_conversation(body.conversation(), ctx)


@bp.post("/v1/chat/completions")
async def create_chat_completion() -> Response:
    body = await parse_json_body(ChatCompletionRequest)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    options = request_options(body, ctx, stream=bool(body.stream), request_id_prefix="chatcmpl")
    top_logprobs = body.top_logprobs or 0
    require(
        top_logprobs == 0 or bool(body.logprobs),
        "when using `top_logprobs`, `logprobs` must be set to true.",
        "top_logprobs",
    )
    n = body.n if body.n is not None else 1
    fields = sampling_fields(
        body,
        n=n,
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        logprobs=top_logprobs if body.logprobs else None,
        prompt_logprobs=body.prompt_logprobs,
    )
    params = sampling_params(fields, ctx)
    admit(ctx.engine, n)
    prompt = render_prompt(body, ctx)
    requests = engine_requests(body, options, [prompt], per_choice_params(params, n))
    generations, accepted = await open_all(ctx.engine, requests)
    return await _Chat(body, options, model, accepted, ctx).respond(generations, bool(body.stream))


class _Chat(ShaperBase):
    body: ChatCompletionRequest

    def __init__(
        self,
        body: ChatCompletionRequest,
        options: RequestOptions,
        model: str,
        accepted: list[RequestOutput],
        ctx: ServingContext,
    ) -> None:
        super().__init__(body, options, model, accepted, ctx)
        self.role = ctx.settings.response_role if body.add_generation_prompt else body.messages[-1].get("role", "")
        self.echo_text = self._echo_text() if body.echo else ""

    def _echo_text(self) -> str:
        """With echo, the answer repeats the last message when it has the answer's role (vLLM)."""
        last = self.body.messages[-1]
        if last.get("role") != self.role:
            return ""
        content = last.get("content")
        if isinstance(content, list):
            return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
        return content or ""

    @property
    def logprobs_requested(self) -> bool:
        return bool(self.body.logprobs)

    def _logprobs(self, output: RequestOutput) -> ChatCompletionLogProbs | None:
        if not self.body.logprobs:
            return None
        return chat_logprobs(output.logprobs or [], self.body.top_logprobs or 0, self.as_token_ids)

    def usage_of(self, results: list[RequestOutput]) -> UsageInfo:
        prompt_tokens = results[0].num_prompt_tokens
        completion_tokens = sum(r.num_output_tokens for r in results)
        cached = results[0].num_cached_tokens if self.options.prompt_tokens_details else None
        return usage(prompt_tokens, completion_tokens, cached)

    def response(self, results: list[RequestOutput]) -> ChatCompletionResponse:
        choices = [
            ChatCompletionResponseChoice(
                index=index,
                message=ChatMessage(role=self.role, content=self.echo_text + result.text),
                logprobs=self._logprobs(result),
                finish_reason=result.finish_reason,
                stop_reason=result.stop_reason,
                token_ids=result.token_ids if self.body.return_token_ids else None,
            )
            for index, result in enumerate(results)
        ]
        first = results[0]
        return ChatCompletionResponse(
            id=self.options.request_id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage_of(results),
            system_fingerprint=self.fingerprint,
            prompt_logprobs=self.options.prompt_logprobs_payload(first),
            prompt_token_ids=first.prompt_token_ids if self.body.return_token_ids else None,
        )

    def chunk(self, choices: list[ChatCompletionResponseStreamChoice], **extra: Any) -> bytes:
        chunk = ChatCompletionStreamResponse(
            id=self.options.request_id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            **extra,
        )
        return sse_event(chunk.model_dump(exclude_unset=True))

    def plain_chunk(self, index: int, text: str) -> bytes:
        return chat_content_event(self.options.request_id, self.created, self.model, index, text)

    def delta_choice(
        self, index: int, output: RequestOutput, text: str, first: bool, text_offset: int
    ) -> ChatCompletionResponseStreamChoice:
        choice = ChatCompletionResponseStreamChoice(
            index=index,
            delta=DeltaMessage(content=text),
            logprobs=self._logprobs(output),
            finish_reason=output.finish_reason,
        )
        # Set only when they apply: chunks are dumped with exclude_unset.
        if output.finished:
            choice.stop_reason = output.stop_reason
        if self.body.return_token_ids:
            choice.token_ids = output.token_ids
        return choice

    def opening_chunks(self, num_choices: int) -> Iterator[bytes]:
        """The role chunk of every choice (and the echoed message), sent with the first generated output as
        vLLM does, so a client's time to first token measures the prefill."""
        prompt_ids = self.accepted[0].prompt_token_ids if self.body.return_token_ids else None
        for index in range(num_choices):
            role = ChatCompletionResponseStreamChoice(
                index=index, delta=DeltaMessage(role=self.role, content=""), logprobs=None, finish_reason=None
            )
            extra = {"prompt_token_ids": prompt_ids} if index == 0 and prompt_ids is not None else {}
            yield self.chunk([role], **extra)
            if self.echo_text:
                echo = ChatCompletionResponseStreamChoice(
                    index=index, delta=DeltaMessage(content=self.echo_text), logprobs=None, finish_reason=None
                )
                yield self.chunk([echo])
