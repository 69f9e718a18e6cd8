"""POST /v1/chat/completions (OpenAI chat, with vLLM's extras)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.chat_protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaMessage,
)
from kvserve.api.openai.logprobs import chat_logprobs
from kvserve.api.openai.request_options import RequestOptions, request_options
from kvserve.api.openai.sampling import CommonFields, NotImplementedFeature, per_choice_params, require, sampling_params
from kvserve.api.openai.stream_chunks import chat_content_event
from kvserve.api.openai.streams import Generation, ShaperBase, merge, open_all, respond, start_generations
from kvserve.api.openai.usage import usage
from kvserve.api.sse import DONE, sse_event
from kvserve.errors import InvalidRequestError
from kvserve.outputs import RequestOutput
from kvserve.text.chat_template import ChatTemplate, ChatTemplateError

bp = Blueprint("openai_chat", __name__)


def chat_template_for(body: ChatCompletionRequest, ctx: ServingContext) -> ChatTemplate:
    if body.chat_template is not None:
        require(
            ctx.settings.trust_request_chat_template,
            "Chat template is passed with request, but --trust-request-chat-template is not set. "
            "Refused request with untrusted chat template.",
            "chat_template",
        )
        try:
            return ChatTemplate(body.chat_template, special_tokens=ctx.engine.tokenizer.special_tokens)
        except ChatTemplateError as e:
            raise InvalidRequestError(str(e), "chat_template") from None
    if ctx.settings.chat_template is None:
        raise InvalidRequestError(
            "This model has no chat template: its tokenizer does not define one, so chat requests need "
            "--chat-template (default chat templates are no longer allowed since transformers v4.44).",
            "messages",
        )
    return ctx.settings.chat_template


def render_messages(body: Any, ctx: ServingContext) -> str:
    """The conversation as prompt text, as the chat template renders it (chat and /tokenize share this)."""
    require(bool(body.messages), "messages must not be empty.", "messages")
    require(
        not (body.continue_final_message and body.add_generation_prompt),
        "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
        "continue_final_message",
    )
    try:
        return chat_template_for(body, ctx).render(
            body.messages,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
            tools=body.tools,
            documents=body.documents,
            chat_template_kwargs=body.chat_template_kwargs,
        )
    except ChatTemplateError as e:
        raise InvalidRequestError(str(e), "messages") from None


def render_prompt(body: ChatCompletionRequest, ctx: ServingContext) -> str:
    if body.tool_choice == "auto" and body.tools:
        raise InvalidRequestError(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', "tool_choice"
        )
    if body.tool_choice not in (None, "none", "auto"):
        raise NotImplementedFeature("tool_choice 'required' or a named tool is not supported yet.", "tool_choice")
    return render_messages(body, ctx)


@bp.post("/v1/chat/completions")
async def create_chat_completion() -> Response:
    body = await parse_json_body(ChatCompletionRequest)
    ctx = ServingContext.current()
    engine = ctx.engine
    model = ctx.model_name(body.model)
    options = request_options(body, ctx, stream=bool(body.stream), request_id_prefix="chatcmpl")
    prompt = render_prompt(body, ctx)
    top_logprobs = body.top_logprobs or 0
    require(
        top_logprobs == 0 or bool(body.logprobs),
        "when using `top_logprobs`, `logprobs` must be set to true.",
        "top_logprobs",
    )
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    n = body.n if body.n is not None else 1
    fields = CommonFields(
        n=n,
        max_tokens=max_tokens,
        logprobs=top_logprobs if body.logprobs else None,
        prompt_logprobs=body.prompt_logprobs,
        seed=body.seed,
    )
    params = sampling_params(body, fields, ctx)
    generations = start_generations(engine, body, [prompt], per_choice_params(params, n), options.request_id)
    accepted = await open_all(generations)
    return await respond(_Chat(body, options, model, accepted, ctx), generations, accepted, bool(body.stream))


class _Chat(ShaperBase):
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

    def _logprobs(self, output: RequestOutput):
        if not self.body.logprobs:
            return None
        return chat_logprobs(output.logprobs or [], self.body.top_logprobs or 0, self.as_token_ids)

    def _usage(self, results: list[RequestOutput]):
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
            usage=self._usage(results),
            system_fingerprint=self.fingerprint,
            prompt_logprobs=self.options.prompt_logprobs_payload(first),
            prompt_token_ids=first.prompt_token_ids if self.body.return_token_ids else None,
        )

    def _chunk(self, choices: list[ChatCompletionResponseStreamChoice], **extra) -> bytes:
        chunk = ChatCompletionStreamResponse(
            id=self.options.request_id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            **extra,
        )
        return sse_event(chunk.model_dump(exclude_unset=True))

    def _opening_chunks(self, num_choices: int) -> Iterator[bytes]:
        """The role chunk of every choice (and the echoed message), sent with the first generated output as
        vLLM does, so a client's time to first token measures the prefill."""
        prompt_ids = self.accepted[0].prompt_token_ids if self.body.return_token_ids else None
        for index in range(num_choices):
            role = ChatCompletionResponseStreamChoice(
                index=index, delta=DeltaMessage(role=self.role, content=""), logprobs=None, finish_reason=None
            )
            extra = {"prompt_token_ids": prompt_ids} if index == 0 and prompt_ids is not None else {}
            yield self._chunk([role], **extra)
            if self.echo_text:
                echo = ChatCompletionResponseStreamChoice(
                    index=index, delta=DeltaMessage(content=self.echo_text), logprobs=None, finish_reason=None
                )
                yield self._chunk([echo])

    async def stream(self, generations: list[Generation]) -> AsyncIterator[bytes]:
        results = self.accepted
        opened = False
        async for index, output in merge(generations):
            results[index].merge(output)
            if not output.text and not output.token_ids and not output.finished:
                continue
            if not opened:
                opened = True
                for chunk in self._opening_chunks(len(generations)):
                    yield chunk
            if not (
                output.finished or self.body.logprobs or self.body.return_token_ids or self.options.continuous_usage
            ):
                yield chat_content_event(self.options.request_id, self.created, self.model, index, output.text)
                continue
            choice = ChatCompletionResponseStreamChoice(
                index=index,
                delta=DeltaMessage(content=output.text),
                logprobs=self._logprobs(output),
                finish_reason=output.finish_reason,
            )
            if output.finished:
                choice.stop_reason = output.stop_reason
            if self.body.return_token_ids:
                choice.token_ids = output.token_ids
            extra = {}
            if self.options.continuous_usage:
                extra["usage"] = usage(output.num_prompt_tokens, output.num_output_tokens, None)
            if output.finished and not self.options.include_usage:
                extra["system_fingerprint"] = self.fingerprint
            yield self._chunk([choice], **extra)
        if self.options.include_usage:
            yield self._chunk([], usage=self._usage(results), system_fingerprint=self.fingerprint)
        yield DONE
