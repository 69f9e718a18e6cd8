"""The Responses API through the official `openai` SDK's `client.responses` against a real server.

Greedy answers must equal /v1/chat/completions' for the same conversation (the input items become that
conversation); tool calls, reasoning and structured output go through the same parsers and constraints as
chat, forced by regex constraints on a tiny random model. Streams are checked event by event against the
non-streamed response; the store (retrieve, previous_response_id, background, cancel) runs on a server that
enables it, and its absence on the shared server.
"""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pytest
from openai.types.responses import Response

from tests.api.http_calls import call_json
from tests.api.test_metrics import scrape
from tests.api.test_structured_tools import CITY_SCHEMA, PERSON, THINK, TWO_CALLS

MODEL = "tiny-tools"  # the tools_server of conftest.py
QUESTION = "What is the weather?"
FUNCTION_TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": CITY_SCHEMA},
    {"type": "function", "name": "get_time", "parameters": {"type": "object", "additionalProperties": False}},
]
CHAT_TOOLS = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in FUNCTION_TOOLS]
GREEDY = {"temperature": 0.0, "max_output_tokens": 24}


def create(client, **kw):
    return client.responses.create(model=MODEL, **{"input": QUESTION, **kw})


def chat_text(client, messages, max_tokens=24, **kw) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0, **kw
    ).choices[0]
    return reply.message.content or ""


def sdk_valid(response) -> Response:
    """The body validated against the SDK's own Response type (the client only constructs it)."""
    return Response.model_validate(response.to_dict())


def message_items(response) -> list:
    return [item for item in response.output if item.type == "message"]


def without_ids(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in items]


# -- input items -> chat messages ------------------------------------------------------------------------------
def test_items_become_one_chat_turn_each():
    from kvserve.api.openai.responses.input_items import chat_messages

    def call(call_id: str, name: str) -> dict:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}

    items = [
        {"role": "user", "content": "Q"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}", "status": "completed"},
        {"type": "function_call_output", "call_id": "c1", "output": "r1"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "r2"}]},
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "again"}]},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ]
    assert chat_messages("Be kind.", items) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning": "hm", "tool_calls": [call("c1", "f"), call("c2", "g")]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        {"role": "assistant", "content": None, "reasoning": "again", "tool_calls": [call("c3", "f")]},
    ]


# -- one turn, not streamed ---------------------------------------------------------------------------------
def test_string_input_equals_chat(tools_client):
    response = sdk_valid(create(tools_client, **GREEDY))
    chat = tools_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0.0
    )
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.output_text == chat.choices[0].message.content
    status = "incomplete" if chat.choices[0].finish_reason == "length" else "completed"
    message = message_items(response)[0]
    assert response.status == message.status == status
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (chat.usage.prompt_tokens, chat.usage.completion_tokens)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0 and usage.input_tokens_details.cached_tokens >= 0
    # The request's settings, echoed as the SDK's type has them.
    echoed = (response.temperature, response.max_output_tokens, response.tool_choice, response.tools)
    assert echoed == (0, 24, "auto", [])
    assert response.text.format.type == "text" and response.parallel_tool_calls is True


def test_items_with_instructions_equal_chat(tools_client):
    items = [
        {"role": "user", "content": "Hello there"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi!", "annotations": []}],
        },
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]
    response = create(tools_client, input=items, instructions="You are terse.", **GREEDY)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    assert response.output_text == chat_text(tools_client, messages)
    assert response.instructions == "You are terse."


def test_max_output_tokens_gives_an_incomplete_response(tools_client):
    response = sdk_valid(create(tools_client, max_output_tokens=5, extra_body={"ignore_eos": True}))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5 and message_items(response)[0].status == "incomplete"


def test_json_schema_text_format_always_validates(tools_client):
    text = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    for seed in range(4):
        response = create(tools_client, text=text, temperature=1.0, max_output_tokens=200, extra_body={"seed": seed})
        assert response.status == "completed"
        jsonschema.validate(json.loads(response.output_text), PERSON)
        assert response.text.format.name == "person"


def test_sdk_parse_with_a_pydantic_model(tools_client):
    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        kind: str = Field(pattern="^(cat|dog)$")
        legs: int = Field(ge=0, le=4)

    parsed = tools_client.responses.parse(model=MODEL, input=QUESTION, text_format=Pet, max_output_tokens=100)
    assert isinstance(parsed.output_parsed, Pet)


# -- tools ----------------------------------------------------------------------------------------------------
def test_function_calls_round_trip(tools_client):
    forced = {"structured_outputs": {"regex": TWO_CALLS}}
    response = sdk_valid(create(tools_client, tools=FUNCTION_TOOLS, max_output_tokens=200, extra_body=forced))
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"] and response.output_text == "Sure."
    assert all(c.id.startswith("fc_") and c.call_id.startswith("call_") and c.status == "completed" for c in calls)
    jsonschema.validate(json.loads(calls[0].arguments), CITY_SCHEMA)
    assert len({c.call_id for c in calls}) == 2

    # The calls and their outputs go back as the next input; the conversation is chat's with tool messages.
    results = [{"type": "function_call_output", "call_id": c.call_id, "output": f"result of {c.name}"} for c in calls]
    items = [{"role": "user", "content": QUESTION}, *[item.to_dict() for item in response.output], *results]
    follow_up = create(tools_client, input=items, tools=FUNCTION_TOOLS, tool_choice="none", **GREEDY)
    messages = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ],
        },
        *[{"role": "tool", "tool_call_id": r["call_id"], "content": r["output"]} for r in results],
    ]
    # With tool_choice "none" the template gets no tools (vLLM's Responses); chat is asked the same way.
    assert follow_up.output_text == chat_text(tools_client, messages)


def test_named_and_required_tool_choice(tools_client):
    named = create(tools_client, tools=FUNCTION_TOOLS, tool_choice={"type": "function", "name": "get_weather"})
    (call,) = named.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), CITY_SCHEMA)
    required = create(
        tools_client, tools=FUNCTION_TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0
    )
    assert [item.type for item in required.output] == ["function_call"]


# -- streaming ------------------------------------------------------------------------------------------------
def check_stream(events: list, whole) -> None:
    """Event order and numbering, and the stream's items rebuilding the non-streamed response."""
    types = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == ("response.completed" if whole.status == "completed" else "response.incomplete")
    final = events[-1].response
    assert final.id == events[0].response.id and events[0].response.status == "in_progress"
    added = [e.item for e in events if e.type == "response.output_item.added"]
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.id for i in added] == [i.id for i in done] == [i.id for i in final.output]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == whole.output_text
    for item in final.output:
        if item.type == "message":
            kinds = [e.type for e in events if getattr(e, "item_id", None) == item.id]
            assert kinds[0] == "response.content_part.added" and kinds[-2:] == [
                "response.output_text.done",
                "response.content_part.done",
            ]
    assert without_ids([i.to_dict() for i in final.output]) == without_ids([i.to_dict() for i in whole.output])
    assert final.usage.output_tokens == whole.usage.output_tokens and final.status == whole.status


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 1.0, "max_output_tokens": 30, "extra_body": {"seed": 7}},
        {"max_output_tokens": 6, "extra_body": {"ignore_eos": True, "seed": 1}},  # incomplete
        {
            "tools": FUNCTION_TOOLS,
            "max_output_tokens": 200,
            "extra_body": {"structured_outputs": {"regex": TWO_CALLS}, "seed": 4},
        },
        {"max_output_tokens": 100, "extra_body": {"structured_outputs": {"regex": THINK}, "seed": 3}},
        {
            "tools": FUNCTION_TOOLS,
            "tool_choice": {"type": "function", "name": "get_weather"},
            "extra_body": {"seed": 2},
        },
    ],
    ids=["text", "incomplete", "tool_calls", "reasoning", "named_tool"],
)
def test_stream_rebuilds_the_response(tools_client, kw):
    whole = create(tools_client, **kw)
    check_stream(list(create(tools_client, stream=True, **kw)), whole)


def test_stream_helper_final_response(tools_client):
    kw = {"max_output_tokens": 100, "extra_body": {"structured_outputs": {"regex": THINK}, "seed": 5}}
    whole = create(tools_client, **kw)
    reasoning = [item for item in whole.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].id.startswith("rs_") and reasoning[0].content[0].type == "reasoning_text"
    assert whole.usage.output_tokens_details.reasoning_tokens > 0
    with tools_client.responses.stream(model=MODEL, input=QUESTION, **kw) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == reasoning[0].content[0].text
    assert final.output_text == whole.output_text


def test_stream_failure_ends_with_error_and_failed(tools_client):
    """A timeout after the stream started: an `error` event, then `response.failed` (stored as failed).
    The first token comes in milliseconds; 480 take longer than the 0.3 s deadline (about 0.5-1 s on a quiet
    2-core machine, more under load)."""
    long = {"max_output_tokens": 480, "extra_body": {"ignore_eos": True, "request_timeout": 0.3}}
    events = list(create(tools_client, stream=True, **long))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].code == "RequestTimeoutError" and "timeout" in events[-2].message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = tools_client.responses.retrieve(events[0].response.id)
    assert failed.status == "failed" and failed.error.code == "RequestTimeoutError"


# -- the store ------------------------------------------------------------------------------------------------
def test_retrieve_and_previous_response_id(tools_client):
    first = create(tools_client, instructions="Answer briefly.", **GREEDY)
    assert tools_client.responses.retrieve(first.id).to_dict() == first.to_dict()
    second = create(tools_client, input="And tomorrow?", previous_response_id=first.id, **GREEDY)
    assert second.previous_response_id == first.id
    # The earlier turn's input and output come first; its instructions do not carry over (OpenAI's rule).
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert second.output_text == chat_text(tools_client, messages)
    third = create(tools_client, input="Thanks.", previous_response_id=second.id, **GREEDY)
    messages += [{"role": "assistant", "content": second.output_text}, {"role": "user", "content": "Thanks."}]
    assert third.output_text == chat_text(tools_client, messages)
    # store=false: answered, not kept.
    unstored = create(tools_client, store=False, **GREEDY)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        tools_client.responses.retrieve(unstored.id)


def wait_for(client, response_id: str, statuses: tuple[str, ...], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        time.sleep(0.02)
    raise AssertionError(f"{response_id} never reached {statuses}: {response.status}")


def test_background_poll(tools_client):
    queued = create(tools_client, background=True, **GREEDY)
    assert queued.status in ("queued", "in_progress") and queued.background is True and queued.output == []
    done = wait_for(tools_client, queued.id, ("completed", "incomplete"))
    assert done.output_text == create(tools_client, **GREEDY).output_text
    with pytest.raises(openai.BadRequestError):  # finished: nothing to cancel
        tools_client.responses.cancel(queued.id)


def test_background_cancel_frees_the_engine(tools_client, tools_server):
    long = {"max_output_tokens": 480, "extra_body": {"ignore_eos": True}}
    started = create(tools_client, background=True, **long)
    wait_for(tools_client, started.id, ("in_progress",))
    cancelled = tools_client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert tools_client.responses.retrieve(started.id).status == "cancelled"
    # A request run to its end afterwards: the last step's stats show nothing left running and no block held.
    create(tools_client, **GREEDY)
    metrics = scrape(tools_server)
    assert metrics[("kvserve:num_requests_running", ())] == 0
    assert metrics[("kvserve:num_requests_waiting", ())] == 0
    assert metrics[("kvserve:kv_cache_usage_perc", ())] == 0


def test_background_stream_and_replay(tools_client):
    kw = {"temperature": 1.0, "max_output_tokens": 30, "extra_body": {"seed": 11}}
    events = list(create(tools_client, background=True, stream=True, **kw))
    check_stream(events, create(tools_client, **kw))
    response_id = events[0].response.id
    assert (
        wait_for(tools_client, response_id, ("completed", "incomplete")).output_text == events[-1].response.output_text
    )
    replayed = list(tools_client.responses.retrieve(response_id, stream=True, starting_after=2))
    assert [e.sequence_number for e in replayed] == list(range(3, len(events)))
    assert [e.type for e in replayed] == [e.type for e in events[3:]]


def test_unknown_ids_are_404s(tools_client):
    with pytest.raises(openai.NotFoundError) as info:
        tools_client.responses.retrieve("resp_nope")
    assert info.value.body["message"] == "Response with id 'resp_nope' not found."
    assert info.value.body["param"] == "response_id"
    with pytest.raises(openai.NotFoundError):
        tools_client.responses.cancel("resp_nope")
    with pytest.raises(openai.NotFoundError):
        create(tools_client, previous_response_id="resp_nope")


def test_store_evicts_least_recently_used_and_old_entries():
    from kvserve.api.openai.responses.protocol import ResponseObject
    from kvserve.api.openai.responses.store import ResponseStore, StoredResponse

    now = [0.0]
    store = ResponseStore(max_entries=2, max_age=10.0, clock=lambda: now[0])

    def entry(response_id: str) -> StoredResponse:
        response = ResponseObject.model_construct(id=response_id, status="completed", output=[])
        return StoredResponse(response, [])

    for name in ("a", "b"):
        store.put(entry(name))
    assert store.get("a") is not None  # a is now the most recently used
    store.put(entry("c"))
    assert (store.get("b"), len(store)) == (None, 2)
    now[0] = 5.0
    store.put(entry("d"))  # a is the least recently used: c was put after a was read
    assert store.get("a") is None and store.get("c") is not None
    now[0] = 12.0  # c was stored at 0: too old
    assert store.get("c") is None and store.get("d") is not None


# -- the shared server: no store ------------------------------------------------------------------------------
def test_without_the_store(client, server):
    response = client.responses.create(
        model="tiny-llama", input=QUESTION, max_output_tokens=4, extra_body={"ignore_eos": True}
    )
    assert response.status == "incomplete" and response.store is False  # `store` accepted and ignored
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve(response.id)
    assert "--enable-responses-store" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny-llama", input="Hi", previous_response_id=response.id)
    # Tools without --enable-auto-tool-choice: no error (vLLM's Responses, unlike chat); the answer is text.
    answer = client.responses.create(model="tiny-llama", input="Hi", tools=FUNCTION_TOOLS, max_output_tokens=4)
    assert [item.type for item in answer.output] == ["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="tiny-llama", input="Hi", background=True)
    assert info.value.body["param"] == "background" and "--enable-responses-store" in info.value.body["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": []}, 400, "input"),
        ({"input": [{"role": "robot", "content": "hi"}]}, 400, "input"),
        ({"input": [{"type": "computer_call_output", "call_id": "x"}]}, 400, "input"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 501, "input"),
        ({"input": [{"type": "function_call", "name": "f"}]}, 400, "input"),
        ({"input": [{"role": ["user"], "content": "hi"}]}, 400, "input"),
        ({"input": [{"type": "reasoning", "encrypted_content": "gAAA"}]}, 501, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 501, "input"),
        ({"tools": [{"type": "web_search"}]}, 501, "tools"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, 501, "tool_choice"),
        ({"reasoning": {"effort": 3}}, 400, "reasoning"),
        ({"conversation": "conv_1"}, 501, "conversation"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, 501, "tools"),
        ({"tools": [{"type": "teleport"}]}, 400, "tools"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"tools": FUNCTION_TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, 400, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, 400, "text"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text"),
        ({"max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"temperature": 5}, 400, "temperature"),
        ({"background": True, "store": False}, 400, "background"),
        ({"include": ["message.output_text.logprobs"]}, 501, "include"),
        ({"prompt": {"id": "pmpt_1"}}, 501, "prompt"),
        ({"model": "other"}, 404, "model"),
    ],
)
def test_invalid_requests(tools_server, tools_client, body, status, param):
    code, answer = call_json(tools_server.base_url, "POST", "/v1/responses", {"input": "hi", **body})
    assert code == status and answer["error"]["param"] == param, answer
    assert create(tools_client, max_output_tokens=2).status in ("completed", "incomplete")  # still serving
