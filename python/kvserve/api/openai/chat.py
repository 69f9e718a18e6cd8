"""POST /v1/chat/completions (OpenAI chat, with vLLM's extras)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import Conversation, render_conversation, with_reasoning_effort
from kvserve.api.frontend.engine_requests import admit
from kvserve.api.frontend.generations import open_all
from kvserve.api.frontend.sampling import per_choice_params, sampling_params
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.chat_protocol import (
    ChatCompletionLogProbs,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from kvserve.api.openai.logprobs import chat_logprobs
from kvserve.api.openai.protocol_base import CompletionTokensDetails, UsageInfo
from kvserve.api.openai.request_options import RequestOptions, engine_requests, request_options
from kvserve.api.openai.sampling import sampling_fields
from kvserve.api.openai.shaper import ShaperBase
from kvserve.api.openai.stream_chunks import chat_content_event
from kvserve.api.openai.structured_fields import grammar_spec
from kvserve.api.openai.tool_choice import NO_TOOLS, ToolPlan, tool_plan
from kvserve.api.openai.usage import usage
from kvserve.api.sse import sse_event
from kvserve.outputs import RequestOutput
from kvserve.structured.spec import GrammarSpec
from kvserve.text.message_parser import MessageDelta, MessageParser, MessageStream, ParsedMessage
from kvserve.text.reasoning.think_tags import reasoning_token_count
from kvserve.text.tools.base import tool_call_id

bp = Blueprint("openai_chat", __name__)


def conversation_of(body: ChatCompletionRequest) -> Conversation:
    return with_reasoning_effort(body.conversation(), body.reasoning_effort)


def output_constraint(body: ChatCompletionRequest, plan: ToolPlan) -> GrammarSpec | None:
    structured = grammar_spec(body)
    require(
        plan.grammar is None or structured is None,
        "You can only use one kind of structured outputs constraint but multiple are specified: "
        "['tool_choice', 'structured outputs']",
        "tool_choice",
    )
    return plan.grammar or structured


@bp.post("/v1/chat/completions")
async def create_chat_completion() -> Response:
    body = await parse_json_body(ChatCompletionRequest)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    options = request_options(body, ctx, stream=bool(body.stream), request_id_prefix="chatcmpl-")
    plan = tool_plan(body, ctx.settings)
    structured = output_constraint(body, plan)
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
        structured=structured,
        # A tool parser reads markup that is made of special tokens in the models that use it.
        skip_special_tokens=False if plan.tools is not None and plan.tools.keeps_special_tokens else None,
    )
    params = sampling_params(fields, ctx)
    admit(ctx.engine, n)  # before rendering: a full queue costs no template work
    prompt = render_conversation(conversation_of(body), ctx)
    requests = engine_requests(body, options, [prompt], per_choice_params(params, n))
    generations, accepted = await open_all(ctx.engine, requests)
    shaper = _Chat(body, options, model, accepted, ctx, plan)
    return await shaper.respond(generations, bool(body.stream))


class _Chat(ShaperBase):
    """Chat's hooks. With a message parser (tool calls, reasoning), each choice's text goes through a
    MessageStream: a delta carries what the new text decided, and the non-streamed message is the parse of the
    whole text, which the deltas concatenate to (see kvserve.text.message_parser)."""

    body: ChatCompletionRequest

    def __init__(
        self,
        body: ChatCompletionRequest,
        options: RequestOptions,
        model: str,
        accepted: list[RequestOutput],
        ctx: ServingContext,
        plan: ToolPlan = NO_TOOLS,
    ) -> None:
        super().__init__(body, options, model, accepted, ctx)
        self.role = ctx.settings.response_role if body.add_generation_prompt else body.messages[-1].get("role", "")
        self.echo_text = self._echo_text() if body.echo else ""
        self.plan = plan
        self.parser: MessageParser | None = plan.message_parser(ctx.settings)
        self.streams = [MessageStream(self.parser) for _ in accepted] if self.parser is not None else []
        self.deltas: list[MessageDelta] = [MessageDelta() for _ in accepted]
        self.call_ids: list[list[str]] = [[] for _ in accepted]  # per choice, the ids its calls were sent with
        self.tokenizer = ctx.engine.tokenizer

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

    @property
    def text_only_deltas(self) -> bool:
        return self.parser is None

    def _logprobs(self, output: RequestOutput) -> ChatCompletionLogProbs | None:
        if not self.body.logprobs:
            return None
        return chat_logprobs(output.logprobs or [], self.body.top_logprobs or 0, self.as_token_ids)

    def usage_of(self, results: list[RequestOutput]) -> UsageInfo:
        prompt_tokens = results[0].num_prompt_tokens
        completion_tokens = sum(r.num_output_tokens for r in results)
        cached = results[0].num_cached_tokens if self.options.prompt_tokens_details else None
        info = usage(prompt_tokens, completion_tokens, cached)
        reasoning = self.parser.reasoning if self.parser is not None else None
        if reasoning is not None:
            count = sum(reasoning_token_count(reasoning, r.text, r.token_ids, self.tokenizer) for r in results)
            info.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=count)
        return info

    def _finish_reason(self, output: RequestOutput, num_calls: int) -> str | None:
        # As in OpenAI and vLLM: "tool_calls" when the model chose to call (auto); a forced call keeps its reason.
        if output.finished and self.plan.auto and num_calls:
            return "tool_calls"
        return output.finish_reason

    def _call_id(self, index: int, call_index: int) -> str:
        """The id of a choice's call: made when first needed, then the same in every chunk that names it."""
        ids = self.call_ids[index]
        while len(ids) <= call_index:
            ids.append(self.plan.tools.call_id() if self.plan.tools is not None else tool_call_id())
        return ids[call_index]

    def _message(self, index: int, result: RequestOutput) -> ChatMessage:
        if self.parser is None:
            return ChatMessage(role=self.role, content=self.echo_text + result.text)
        parsed: ParsedMessage = self.parser.parse(result.text, final=True)
        calls = [
            ToolCall(id=self._call_id(index, i), function=FunctionCall(name=call.name, arguments=call.arguments))
            for i, call in enumerate(parsed.calls)
        ]
        # No text: None, or "" when a forced tool call took the answer (vLLM).
        content = (self.echo_text + parsed.content) or ("" if self.plan.grammar is not None else None)
        reasoning = (parsed.reasoning or None) if self.body.include_reasoning else None
        return ChatMessage(role=self.role, content=content, reasoning=reasoning, tool_calls=calls)

    def response(self, results: list[RequestOutput]) -> ChatCompletionResponse:
        choices = []
        for index, result in enumerate(results):
            message = self._message(index, result)
            choices.append(
                ChatCompletionResponseChoice(
                    index=index,
                    message=message,
                    logprobs=self._logprobs(result),
                    finish_reason=self._finish_reason(result, len(message.tool_calls)),
                    stop_reason=result.stop_reason,
                    token_ids=result.token_ids if self.body.return_token_ids else None,
                )
            )
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

    # -- streaming through the message parser --------------------------------------------------------------
    def delta_text(self, index: int, output: RequestOutput, first: bool) -> str:
        if self.parser is None:
            return output.text
        delta = self.streams[index].feed(output.text, output.finished)
        if not self.body.include_reasoning:
            delta.reasoning = ""
        self.deltas[index] = delta
        return delta.content

    def worth_sending(self, index: int, text: str, output: RequestOutput, first: bool) -> bool:
        if self.parser is None:
            return super().worth_sending(index, text, output, first)
        # Held-back text sends nothing, unless the chunk must carry its tokens' logprobs or ids.
        carries_tokens = bool(output.token_ids) and (self.logprobs_requested or bool(self.body.return_token_ids))
        return bool(self.deltas[index]) or output.finished or carries_tokens

    def _delta_message(self, index: int, text: str) -> DeltaMessage:
        if self.parser is None:
            return DeltaMessage(content=text)
        delta = self.deltas[index]
        fields: dict[str, Any] = {}
        if delta.reasoning:
            fields["reasoning"] = delta.reasoning
        if delta.content:
            fields["content"] = delta.content
        if delta.calls:
            fields["tool_calls"] = [
                DeltaToolCall(
                    index=call.index,
                    id=self._call_id(index, call.index),
                    type="function",
                    function=DeltaFunctionCall(name=call.name, arguments=call.arguments),
                )
                if call.name is not None
                else DeltaToolCall(index=call.index, function=DeltaFunctionCall(arguments=call.arguments))
                for call in delta.calls
            ]
        return DeltaMessage(**fields)

    def delta_choice(
        self, index: int, output: RequestOutput, text: str, first: bool, text_offset: int
    ) -> ChatCompletionResponseStreamChoice:
        num_calls = len(self.streams[index].sent.calls) if self.parser is not None else 0
        choice = ChatCompletionResponseStreamChoice(
            index=index,
            delta=self._delta_message(index, text),
            logprobs=self._logprobs(output),
            finish_reason=self._finish_reason(output, num_calls),
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
