"""Chat options that shape the prompt and the constraint: reasoning_effort reaches the template, and
tool_choice turns into the grammar vLLM uses for it."""

from __future__ import annotations

import json

from kvserve.api.openai.chat import conversation_of
from kvserve.api.openai.chat_protocol import ChatCompletionRequest
from kvserve.api.openai.tool_choice import tool_plan
from kvserve.api.settings import ServerSettings
from kvserve.text.tools.registry import tool_parser

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
SETTINGS = ServerSettings(
    served_model_names=("m",),
    model_root="m",
    chat_template=None,
    enable_auto_tool_choice=True,
    tool_parser=tool_parser("hermes"),
)


def test_reasoning_effort_reaches_the_template_with_enable_thinking():
    plain = conversation_of(ChatCompletionRequest(messages=USER))
    assert plain.chat_template_kwargs is None
    low = conversation_of(ChatCompletionRequest(messages=USER, reasoning_effort="low"))
    assert low.chat_template_kwargs == {"reasoning_effort": "low", "enable_thinking": True}
    none = conversation_of(ChatCompletionRequest(messages=USER, reasoning_effort="none"))
    assert none.chat_template_kwargs == {"reasoning_effort": "none", "enable_thinking": False}
    kwargs = {"enable_thinking": True}
    given = ChatCompletionRequest(messages=USER, reasoning_effort="none", chat_template_kwargs=kwargs)
    assert conversation_of(given).chat_template_kwargs["enable_thinking"] is True


def test_tool_choice_plans():
    auto = tool_plan(ChatCompletionRequest(messages=USER, tools=[TOOL]), SETTINGS)
    assert auto.auto and auto.grammar is None and auto.tools is SETTINGS.tool_parser
    none = tool_plan(ChatCompletionRequest(messages=USER, tools=[TOOL], tool_choice="none"), SETTINGS)
    assert none.message_parser(SETTINGS) is None  # plain text: the stream's fast path
    named = tool_plan(
        ChatCompletionRequest(messages=USER, tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
        SETTINGS,
    )
    assert named.named_function == "f" and json.loads(named.grammar.source) == TOOL["function"]["parameters"]
    single = tool_plan(
        ChatCompletionRequest(messages=USER, tools=[TOOL], tool_choice="required", parallel_tool_calls=False),
        SETTINGS,
    )
    schema = json.loads(single.grammar.source)
    assert schema["minItems"] == 1 and schema["maxItems"] == 1
    assert schema["items"]["anyOf"][0]["properties"]["name"] == {"type": "string", "enum": ["f"]}
