"""The dict-built hot-path chunks serialise exactly like the pydantic response models, and the message
models' tool-call and reasoning fields."""

from __future__ import annotations

import pytest

from kvserve.api.openai.chat_protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from kvserve.api.openai.completion_protocol import CompletionResponseStreamChoice, CompletionStreamResponse
from kvserve.api.openai.stream_chunks import chat_content_event, completion_text_event
from kvserve.api.sse import sse_event

TEXTS = ["", "hello", ' "quoted" \\ \n', "ünïcødé 👋", "\x00\x1f"]


@pytest.mark.parametrize("text", TEXTS)
def test_chat_content_chunk_matches_the_model(text):
    model = ChatCompletionStreamResponse(
        id="chatcmpl-1",
        object="chat.completion.chunk",
        created=123,
        model="m",
        choices=[
            ChatCompletionResponseStreamChoice(
                index=2, delta=DeltaMessage(content=text), logprobs=None, finish_reason=None
            )
        ],
    )
    assert chat_content_event("chatcmpl-1", 123, "m", 2, text) == sse_event(model.model_dump(exclude_unset=True))


@pytest.mark.parametrize("text", TEXTS)
def test_completion_text_chunk_matches_the_model(text):
    model = CompletionStreamResponse(
        id="cmpl-1",
        created=123,
        model="m",
        choices=[
            CompletionResponseStreamChoice(index=1, text=text, logprobs=None, finish_reason=None, stop_reason=None)
        ],
    )
    assert completion_text_event("cmpl-1", 123, "m", 1, text) == sse_event(model.model_dump())


def test_messages_carry_tool_calls_and_reasoning_with_vllm_defaults():
    assert ChatMessage(role="assistant", content="hi").model_dump() == {
        "role": "assistant",
        "content": "hi",
        "refusal": None,
        "tool_calls": [],
        "reasoning": None,
    }
    call = ToolCall(function=FunctionCall(name="f", arguments="{}"))
    assert call.id.startswith("chatcmpl-tool-") and call.type == "function"


def test_a_delta_shows_only_what_is_set_on_it():
    assert DeltaMessage(content="x").model_dump(exclude_unset=True) == {"content": "x"}
    piece = DeltaToolCall(index=1, function=DeltaFunctionCall(arguments='{"a'))
    assert DeltaMessage(tool_calls=[piece]).model_dump(exclude_unset=True) == {
        "tool_calls": [{"index": 1, "function": {"arguments": '{"a'}}]
    }
    assert DeltaMessage(reasoning="hmm").model_dump(exclude_unset=True) == {"reasoning": "hmm"}
