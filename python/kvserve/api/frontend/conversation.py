"""A chat conversation rendered to prompt text by the chat template (chat routes, /tokenize, render routes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.errors import InvalidRequestError
from kvserve.text.chat_template import ChatTemplate, ChatTemplateError


@dataclass(frozen=True, slots=True)
class Conversation:
    """What the chat template needs, whichever API family sent the messages."""

    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    tools: list[dict[str, Any]] | None = None
    documents: list[dict[str, str]] | None = None
    chat_template: str | None = None  # a template sent with the request (needs --trust-request-chat-template)
    chat_template_kwargs: dict[str, Any] | None = None


def with_reasoning_effort(conversation: Conversation, effort: str | None) -> Conversation:
    """The request's reasoning effort reaches the template, with enable_thinking (false for "none") unless the
    request's own chat_template_kwargs set it."""
    if effort is None:
        return conversation
    kwargs = {
        "reasoning_effort": effort,
        "enable_thinking": effort != "none",
        **(conversation.chat_template_kwargs or {}),
    }
    return dataclasses.replace(conversation, chat_template_kwargs=kwargs)


def chat_template_for(conversation: Conversation, ctx: ServingContext) -> ChatTemplate:
    if conversation.chat_template is not None:
        require(
            ctx.settings.trust_request_chat_template,
            "Chat template is passed with request, but --trust-request-chat-template is not set. "
            "Refused request with untrusted chat template.",
            "chat_template",
        )
        try:
            return ChatTemplate(conversation.chat_template, special_tokens=ctx.engine.tokenizer.special_tokens)
        except ChatTemplateError as e:
            raise InvalidRequestError(str(e), "chat_template") from None
    if ctx.settings.chat_template is None:
        raise InvalidRequestError(
            "This model has no chat template: its tokenizer does not define one, so chat requests need "
            "--chat-template (default chat templates are no longer allowed since transformers v4.44).",
            "messages",
        )
    return ctx.settings.chat_template


def render_conversation(conversation: Conversation, ctx: ServingContext) -> str:
    """The conversation as prompt text, as the chat template renders it."""
    require(bool(conversation.messages), "messages must not be empty.", "messages")
    require(
        not (conversation.continue_final_message and conversation.add_generation_prompt),
        "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
        "continue_final_message",
    )
    try:
        return chat_template_for(conversation, ctx).render(
            conversation.messages,
            add_generation_prompt=conversation.add_generation_prompt,
            continue_final_message=conversation.continue_final_message,
            tools=conversation.tools,
            documents=conversation.documents,
            chat_template_kwargs=conversation.chat_template_kwargs,
        )
    except ChatTemplateError as e:
        raise InvalidRequestError(str(e), "messages") from None
