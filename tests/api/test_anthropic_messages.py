"""Anthropic's Messages API through the official `anthropic` SDK against a real server: greedy text equal to
/v1/chat/completions for the same conversation, the SDK's stream helper (which checks the event order) and
its error classes, stop reasons, count_tokens, x-api-key auth, and tool use forced by tool_choice."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

from tests.api.conftest import OPS_API_KEYS
from tests.api.http_calls import call, call_json
from tests.api.test_structured_tools import CITY_SCHEMA, NO_ARGUMENTS
from tests.api.test_structured_tools import MODEL as TOOLS_MODEL

MODEL = "tiny-llama"
USER = [{"role": "user", "content": "Tell me about the weather in Paris."}]


@pytest.fixture(scope="module")
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


SAMPLING = ("temperature", "top_p", "top_k")


def arguments(**kw) -> dict:
    """A request's keyword arguments; the SDK (2.x) has no sampling parameters, so they travel in extra_body."""
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", USER)
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0.0)
    kw["extra_body"] = {**kw.pop("extra_body", {}), **{name: kw.pop(name) for name in SAMPLING if name in kw}}
    return kw


def create(client, **kw):
    return client.messages.create(**arguments(**kw))


def stream_final(client, **kw):
    """The SDK's stream helper, which accumulates the events into a Message (and rejects them out of order)."""
    with client.messages.stream(**arguments(**kw)) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "".join(block.text for block in message.content if block.type == "text")
    return message


def text_of(message) -> str:
    assert all(block.type == "text" for block in message.content)
    return "".join(block.text for block in message.content)


def test_greedy_message_equals_chat_completion(claude, client):
    message = create(claude)
    chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=0.0)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert text_of(message) == chat.choices[0].message.content
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    assert message.usage.output_tokens == chat.usage.completion_tokens == 12
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None


def test_stream_events_in_order_and_equal_to_the_message(claude):
    whole = create(claude)
    events = list(create(claude, stream=True))
    kinds = [event.type for event in events]  # the SDK drops ping events
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    blocks = kinds[1:-2]
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"
    assert set(blocks[1:-1]) == {"content_block_delta"}
    assert events[0].message.usage.input_tokens == whole.usage.input_tokens
    assert events[-2].delta.stop_reason == "max_tokens"
    assert events[-2].usage.output_tokens == whole.usage.output_tokens
    final = stream_final(claude)
    assert text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_stream_frames_name_their_events(server):
    body = {"model": MODEL, "messages": USER, "max_tokens": 4, "temperature": 0.0, "stream": True}
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "unused"}
    status, response_headers, raw = call(server.base_url, "POST", "/v1/messages", body, headers=headers)
    assert status == 200 and response_headers["content-type"].startswith("text/event-stream")
    frames = [frame.split("\n") for frame in raw.decode().split("\n\n") if frame]
    names = [name.removeprefix("event: ") for name, _ in frames]
    assert [json.loads(data.removeprefix("data: "))["type"] for _, data in frames] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_stop_sequence_ends_the_message_without_it(claude):
    text = text_of(create(claude, max_tokens=16))
    stop = next(text[i : i + 2] for i in range(2, len(text) - 2) if text[i : i + 2].strip())
    for stream in (False, True):
        message = (stream_final if stream else create)(claude, max_tokens=16, stop_sequences=[stop])
        assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
        assert text_of(message) == text[: text.index(stop)]


def test_system_blocks_and_history_render_like_chat(claude, client):
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "greet back", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Hello!"},
            ],
        },
        {"role": "user", "content": "Weather?"},
    ]
    message = create(
        claude, messages=history, system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Always."}]
    )
    chat_messages = [
        {"role": "system", "content": "Be brief. Always."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning": "greet back"},
        {"role": "user", "content": "Weather?"},
    ]
    chat = client.chat.completions.create(model=MODEL, messages=chat_messages, max_tokens=12, temperature=0.0)
    assert text_of(message) == chat.choices[0].message.content
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    counted = claude.messages.count_tokens(model=MODEL, messages=history, system="Be brief. Always.")
    assert counted.input_tokens == message.usage.input_tokens


def test_count_tokens_is_the_prompt_the_server_runs(claude):
    for messages in (USER, [*USER, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "And?"}]):
        counted = claude.messages.count_tokens(model=MODEL, messages=messages, system="You are terse.")
        assert counted.input_tokens == create(claude, messages=messages, system="You are terse.").usage.input_tokens


def test_output_config_format_constrains_the_answer(claude):
    schema = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    output_config = {"format": {"type": "json_schema", "schema": schema}}
    message = create(claude, max_tokens=100, output_config=output_config)
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(text_of(message)), schema)


def test_errors_raise_the_sdk_classes_with_anthropic_types(claude, server):
    with pytest.raises(anthropic.NotFoundError) as e:
        create(claude, model="no-such-model")
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        create(claude, messages=[{"role": "robot", "content": "hi"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    assert "role" in e.value.body["error"]["message"]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError, match="text only"):
        create(claude, messages=[{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}])
    with pytest.raises(anthropic.BadRequestError, match="tool-call-parser"):  # auto tool choice needs a parser
        create(claude, tools=[{"name": "get_time", "input_schema": NO_ARGUMENTS}])
    # The SDK insists on max_tokens itself; the server does too.
    status, body = call_json(server.base_url, "POST", "/v1/messages", {"model": MODEL, "messages": USER})
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    status, body = call_json(
        server.base_url, "POST", "/v1/messages", {"model": MODEL, "messages": USER, "max_tokens": 0}
    )
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_x_api_key_is_checked(ops_server):
    base_url = f"{ops_server.base_url}/api"  # under its --root-path
    keyed = anthropic.Anthropic(base_url=base_url, api_key=OPS_API_KEYS[1], max_retries=0, timeout=60)
    message = keyed.messages.create(**arguments(model="tiny-ops", max_tokens=3))
    assert message.usage.output_tokens == 3
    wrong = anthropic.Anthropic(base_url=base_url, api_key="wrong-key", max_retries=0, timeout=60)
    with pytest.raises(anthropic.AuthenticationError) as e:
        wrong.messages.count_tokens(model="tiny-ops", messages=USER)
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    body = {"model": "tiny-ops", "messages": USER, "max_tokens": 3}
    status, answer = call_json(
        ops_server.base_url, "POST", "/v1/messages", body, headers={"anthropic-version": "2023-06-01"}
    )
    assert status == 401 and answer["type"] == "error" and answer["error"]["type"] == "authentication_error"


# -- tools -----------------------------------------------------------------------------------------------------
TOOLS = [
    {"name": "get_weather", "description": "The weather in a city.", "input_schema": CITY_SCHEMA},
    {"name": "get_time", "input_schema": NO_ARGUMENTS},
]


@pytest.fixture(scope="module")
def tools_claude(request):
    """The tool-calling server of the chat tests (hermes markup, a template that renders tools and results)."""
    server = request.getfixturevalue("tools_server")
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


def tool_uses(message) -> list:
    return [block for block in message.content if block.type == "tool_use"]


def test_forced_tool_use_streamed_and_not(tools_claude):
    """tool_choice {type: tool} constrains the answer to the tool's input schema: a tool_use block (with
    stop_reason tool_use, as Anthropic answers a forced call); the stream helper rebuilds the same call from
    its input_json_delta events (greedy: the same tokens)."""
    kw = dict(max_tokens=400, tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})
    message = create(tools_claude, model=TOOLS_MODEL, **kw)
    final = stream_final(tools_claude, model=TOOLS_MODEL, **kw)
    for answer in (message, final):
        (call,) = tool_uses(answer)
        assert call.id.startswith("toolu_") and call.name == "get_weather"
        jsonschema.validate(call.input, CITY_SCHEMA)
        assert answer.stop_reason == "tool_use"
    assert tool_uses(final)[0].input == tool_uses(message)[0].input
    assert final.usage.output_tokens == message.usage.output_tokens


def test_any_tool_choice_calls_one_of_the_tools(tools_claude):
    message = create(
        tools_claude,
        model=TOOLS_MODEL,
        max_tokens=400,
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    (call,) = tool_uses(message)
    assert call.name in ("get_weather", "get_time")
    jsonschema.validate(call.input, CITY_SCHEMA if call.name == "get_weather" else NO_ARGUMENTS)
    assert message.stop_reason == "tool_use"
    # The call and its result go back in the conversation, as an agent loop sends them.
    follow_up = [
        *USER,
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}]},
    ]
    answer = create(
        tools_claude, model=TOOLS_MODEL, messages=follow_up, max_tokens=5, tools=TOOLS, tool_choice={"type": "none"}
    )
    assert answer.stop_reason == "max_tokens" and not tool_uses(answer)
    counted = tools_claude.messages.count_tokens(model=TOOLS_MODEL, messages=follow_up, tools=TOOLS)
    assert counted.input_tokens == answer.usage.input_tokens
