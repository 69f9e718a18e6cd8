"""Anthropic requests -> the front half's Conversation and ToolPlan (the OpenAI shapes chat templates read)."""

from __future__ import annotations

import json

import pydantic
import pytest

from kvserve.api.anthropic.conversion import conversation_of, output_constraint, tool_plan
from kvserve.api.anthropic.protocol import MessagesRequest
from kvserve.api.settings import ServerSettings
from kvserve.errors import InvalidRequestError
from tests.structured.test_chat_options import SETTINGS as AUTO  # --enable-auto-tool-choice, hermes

SETTINGS = ServerSettings(served_model_names=("m",), model_root="m", chat_template=None)
WEATHER = {
    "name": "get_weather",
    "description": "Weather.",
    "input_schema": {"properties": {"city": {"type": "string"}}},
}


def request(**fields) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 8, "messages": [], **fields})


def test_an_agent_turn_becomes_openai_messages():
    body = request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Use tools."}],
        tools=[WEATHER],
        messages=[
            {"role": "ctx", "content": "Weather in Paris?"},  # Claude Code's role, read as user (vLLM)
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Call the tool.", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                    {"type": "text", "text": "Thanks. "},
                    {"type": "text", "text": "And Rome?"},
                ],
            },
        ],
    )
    conversation = conversation_of(body)
    assert conversation.messages == [
        {"role": "system", "content": "Be brief. Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": "Call the tool.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks. "}, {"type": "text", "text": "And Rome?"}]},
    ]
    (tool,) = conversation.tools
    assert tool["function"]["parameters"]["type"] == "object"  # an input_schema without a type is an object


def test_thinking_and_effort_reach_the_template():
    assert conversation_of(request()).chat_template_kwargs is None
    assert conversation_of(request(thinking={"type": "disabled"})).chat_template_kwargs == {"enable_thinking": False}
    kwargs = conversation_of(request(output_config={"effort": "high"})).chat_template_kwargs
    assert kwargs == {"reasoning_effort": "high", "enable_thinking": True}
    explicit = request(
        thinking={"type": "enabled", "budget_tokens": 64}, chat_template_kwargs={"enable_thinking": False}
    )
    assert conversation_of(explicit).chat_template_kwargs == {"enable_thinking": False}


def test_tool_choices_map_to_openai_plans():
    assert tool_plan(request(tools=[WEATHER], tool_choice={"type": "none"}), SETTINGS).grammar is None
    named = tool_plan(request(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}), SETTINGS)
    assert named.named_function == "get_weather" and named.grammar is not None
    required = tool_plan(
        request(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}), SETTINGS
    )
    assert json.loads(required.grammar.source)["maxItems"] == 1
    assert tool_plan(request(tools=[WEATHER]), AUTO).auto  # tools without a choice: auto
    with pytest.raises(InvalidRequestError, match="--tool-call-parser"):
        tool_plan(request(tools=[WEATHER]), SETTINGS)
    with pytest.raises(InvalidRequestError, match="does not match"):
        tool_plan(request(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}), SETTINGS)
    both = request(
        tools=[WEATHER],
        tool_choice={"type": "any"},
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
    )
    with pytest.raises(InvalidRequestError, match="output_config.format"):
        output_constraint(both, tool_plan(both, SETTINGS))


@pytest.mark.parametrize(
    "content, match",
    [
        ([{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}], "text only"),
        ([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}], "text only"),
        ([{"type": "document", "source": {}}], "unknown content block type 'document'"),
        ([{"type": "tool_use", "input": {}}], "needs `id` and `name`"),
        ([{"type": "text"}], "needs `text`"),
    ],
)
def test_blocks_a_text_model_cannot_take_are_400s(content, match):
    with pytest.raises(InvalidRequestError, match=match):
        conversation_of(request(messages=[{"role": "user", "content": content}]))


def test_bad_roles_and_missing_max_tokens_fail_validation():
    with pytest.raises(pydantic.ValidationError, match="role"):
        request(messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        MessagesRequest.model_validate({"model": "m", "messages": []})
