"""Structured outputs, tool calling and reasoning through the `openai` SDK against a real server.

A tiny random model under a constraint must produce output that validates, for many seeds. Tool markup and
think tags come from the same model, forced by a regex constraint: the real token stream goes through the real
parsers, and the streamed deltas must rebuild the non-streamed message exactly (same seed, same tokens).
"""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
import tokenizers

MODEL = "tiny-tools"
USER = [{"role": "user", "content": "What is the weather?"}]
SEEDS = range(6)

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
NO_ARGUMENTS = {"type": "object", "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": CITY_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": NO_ARGUMENTS}},
]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "likes": {"type": "array", "items": {"enum": ["tea", "jazz"]}, "maxItems": 2},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
# Hermes markup that the regex constraint makes the model write: two calls, the second without arguments.
TWO_CALLS = (
    r'Sure\.<tool_call>\{"name": "get_weather", "arguments": \{"city": "(Paris|Rome)", "days": [1-7]\}\}</tool_call>'
    r'<tool_call>\{"name": "get_time", "arguments": \{\}\}</tool_call>'
)


def chat(client, stream: bool = False, **kw):
    kw.setdefault("max_tokens", 400)
    return client.chat.completions.create(model=MODEL, messages=kw.pop("messages", USER), stream=stream, **kw)


def rebuilt(chunks) -> dict:
    """The message a client rebuilds from a stream: texts concatenated, tool calls assembled by index."""
    content, reasoning, calls, finish = "", "", {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning", None) or ""
        for call in delta.tool_calls or []:
            if call.id is not None:
                assert call.index not in calls and call.function.name
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            calls[call.index]["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    return {"content": content, "reasoning": reasoning, "calls": [calls[i] for i in sorted(calls)], "finish": finish}


def flat(response) -> dict:
    choice = response.choices[0]
    message = choice.message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
    return {
        "content": message.content or "",
        "reasoning": getattr(message, "reasoning", None) or "",
        "calls": calls,
        "finish": choice.finish_reason,
    }


def same_message(streamed: dict, whole: dict) -> None:
    """Equal apart from call ids, which are random per response."""
    strip = lambda m: {**m, "calls": [{k: v for k, v in c.items() if k != "id"} for c in m["calls"]]}
    assert strip(streamed) == strip(whole)


# -- structured outputs ---------------------------------------------------------------------------------------
def test_json_schema_response_format_always_validates(tools_client):
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in SEEDS:
        whole = chat(tools_client, seed=seed, temperature=1.0, response_format=response_format)
        assert whole.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(whole.choices[0].message.content), PERSON)
        streamed = rebuilt(chat(tools_client, True, seed=seed, temperature=1.0, response_format=response_format))
        same_message(streamed, flat(whole))


def test_sdk_parse_with_a_pydantic_model(tools_client):
    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        kind: str = Field(pattern="^(cat|dog)$")
        legs: int = Field(ge=0, le=4)

    parsed = tools_client.chat.completions.parse(
        model=MODEL, messages=USER, response_format=Pet, max_tokens=200, seed=1
    )
    assert isinstance(parsed.choices[0].message.parsed, Pet)


@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        ({"structured_outputs": {"regex": r"[0-9]{3}-[a-z]{2,4}"}}, lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t)),
        ({"guided_regex": r"(up|down){2}!"}, lambda t: re.fullmatch(r"(up|down){2}!", t)),
        ({"structured_outputs": {"choice": ["alpha", "beta gamma"]}}, lambda t: t in ("alpha", "beta gamma")),
        ({"guided_choice": ["x", "yz"]}, lambda t: t in ("x", "yz")),
        (
            {"structured_outputs": {"grammar": 'root ::= "(" [0-9] ("+" [0-9])* ")"'}},
            lambda t: re.fullmatch(r"\(\d(\+\d)*\)", t),
        ),
        ({"guided_json": PERSON}, lambda t: jsonschema.validate(json.loads(t), PERSON) is None),
    ],
)
def test_constraints_on_completions_and_chat(tools_client, extra, valid):
    extra = dict(extra)
    response_format = extra.pop("response_format", None)
    for seed in SEEDS[:3]:
        kw = dict(max_tokens=300, seed=seed, extra_body=extra)
        completion_extra = extra if response_format is None else {**extra, "response_format": response_format}
        text = (
            tools_client.completions.create(
                model=MODEL, prompt="Answer:", max_tokens=300, seed=seed, extra_body=completion_extra
            )
            .choices[0]
            .text
        )
        if response_format is not None:
            kw["response_format"] = response_format
        assert valid(text), text
        whole = chat(tools_client, **kw)
        assert valid(whole.choices[0].message.content), whole
        same_message(rebuilt(chat(tools_client, True, **kw)), flat(whole))


def test_json_object_is_an_object_unless_cut_off(tools_client):
    """Any object, so a random model may not close it within max_tokens: only "length" excuses invalid JSON."""
    for seed in SEEDS[:3]:
        choice = chat(tools_client, seed=seed, response_format={"type": "json_object"}).choices[0]
        assert choice.finish_reason == "length" or isinstance(json.loads(choice.message.content), dict)


def test_disable_any_whitespace_gives_compact_json(tools_client):
    body = {"structured_outputs": {"json": PERSON, "disable_any_whitespace": True}}
    for seed in SEEDS[:3]:
        text = chat(tools_client, seed=seed, extra_body=body).choices[0].message.content
        assert json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False) == text


# -- tool choice required and named ---------------------------------------------------------------------------
def check_call(call: dict) -> None:
    arguments = json.loads(call["arguments"])
    if call["name"] == "get_weather":
        jsonschema.validate(arguments, CITY_SCHEMA)
    else:
        assert call["name"] == "get_time" and arguments == {}


@pytest.mark.parametrize("parallel", [True, False])
def test_tool_choice_required_always_gives_valid_calls(tools_client, parallel):
    for seed in SEEDS:
        kw = dict(tools=TOOLS, tool_choice="required", seed=seed, parallel_tool_calls=parallel)
        whole = flat(chat(tools_client, **kw))
        # A random model may add calls to an open array until max_tokens: every call returned is still whole
        # and valid, and the cut-off rest is content. One call at most closes the array.
        assert (whole["finish"], whole["content"]) == ("stop", "") or (parallel and whole["finish"] == "length")
        assert whole["calls"] and (parallel or len(whole["calls"]) == 1)
        for call in whole["calls"]:
            check_call(call)
        same_message(rebuilt(chat(tools_client, True, **kw)), whole)


def test_named_tool_choice_always_gives_valid_arguments(tools_client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    for seed in SEEDS:
        whole = flat(chat(tools_client, tools=TOOLS, tool_choice=choice, seed=seed))
        assert len(whole["calls"]) == 1 and whole["calls"][0]["name"] == "get_weather"
        check_call(whole["calls"][0])
        chunks = list(chat(tools_client, True, tools=TOOLS, tool_choice=choice, seed=seed))
        same_message(rebuilt(chunks), whole)
        firsts = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        assert firsts[0].id and firsts[0].type == "function" and firsts[0].function.name == "get_weather"
        assert all(call.id is None and call.function.name is None for call in firsts[1:])


# -- tool choice auto: the model's own markup, read by the hermes parser ----------------------------------------
def test_auto_tool_calls_are_parsed_streamed_and_not_streamed(tools_client):
    for seed in SEEDS[:4]:
        kw = dict(tools=TOOLS, seed=seed, extra_body={"structured_outputs": {"regex": TWO_CALLS}})
        whole = flat(chat(tools_client, **kw))
        assert whole["finish"] == "tool_calls" and whole["content"] == "Sure."
        assert [c["name"] for c in whole["calls"]] == ["get_weather", "get_time"]
        for call in whole["calls"]:
            check_call(call)
        assert whole["calls"][0]["id"] != whole["calls"][1]["id"]
        same_message(rebuilt(chat(tools_client, True, **kw)), whole)


def test_auto_markup_cut_off_stays_content(tools_client):
    """A block cut by max_tokens is not a call: it comes back as text, never as broken arguments."""
    kw = dict(tools=TOOLS, seed=0, max_tokens=8, extra_body={"structured_outputs": {"regex": TWO_CALLS}})
    whole = flat(chat(tools_client, **kw))
    assert whole["finish"] == "length" and whole["calls"] == [] and whole["content"].startswith("Sure.<t")
    same_message(rebuilt(chat(tools_client, True, **kw)), whole)


def test_tool_choice_none_answers_in_text(tools_client):
    kw = dict(tools=TOOLS, tool_choice="none", seed=0, extra_body={"structured_outputs": {"regex": TWO_CALLS}})
    whole = flat(chat(tools_client, **kw))
    assert whole["calls"] == [] and whole["content"].startswith("Sure.<tool_call>") and whole["finish"] == "stop"


def test_tools_and_tool_history_reach_the_template(tools_client, tiny_model_dir):
    tokenizer = tokenizers.Tokenizer.from_file(str(tiny_model_dir("llama") / "tokenizer.json"))
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
    ]
    response = chat(tools_client, messages=messages, tools=TOOLS, max_tokens=1, extra_body={"return_token_ids": True})
    prompt = tokenizer.decode(response.prompt_token_ids, skip_special_tokens=False)
    assert "# Toolsget_weatherget_time<|im_end|>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt


# -- reasoning ------------------------------------------------------------------------------------------------
THINK = r"<think>[a-z ]{5,30}</think>[A-Z][a-z]{2,8}\."


def test_reasoning_is_split_from_the_answer(tools_client):
    for seed in SEEDS[:3]:
        kw = dict(seed=seed, extra_body={"structured_outputs": {"regex": THINK}})
        response = chat(tools_client, **kw)
        whole = flat(response)
        assert re.fullmatch(r"[a-z ]{5,30}", whole["reasoning"]) and re.fullmatch(
            r"[A-Z][a-z]{2,8}\.", whole["content"]
        )
        details = response.usage.completion_tokens_details
        assert 0 < details.reasoning_tokens < response.usage.completion_tokens
        same_message(rebuilt(chat(tools_client, True, **kw)), whole)
        hidden = flat(chat(tools_client, seed=seed, extra_body={**kw["extra_body"], "include_reasoning": False}))
        assert hidden["reasoning"] == "" and hidden["content"] == whole["content"]


# -- invalid inputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"structured_outputs": {"regex": "[a-"}}, "structured_outputs"),
        ({"structured_outputs": {"json": {"type": "nonsense"}}}, "structured_outputs"),
        ({"structured_outputs": {"grammar": "root ::= missing"}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),  # without tools
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tools": [], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools"),
        ({"tools": TOOLS, "tool_choice": "required", "guided_regex": "a"}, "tool_choice"),
    ],
)
def test_invalid_inputs_are_400s_and_the_server_keeps_serving(tools_client, tools_server, body, param):
    import urllib.request

    payload = {"model": MODEL, "messages": USER, "max_tokens": 4, **body}
    request = urllib.request.Request(
        f"{tools_server.base_url}/v1/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 400
    error = json.loads(info.value.read())["error"]
    assert error["param"] == param, error
    answer = chat(tools_client, max_tokens=20, extra_body={"structured_outputs": {"choice": ["ok", "fine"]}})
    assert answer.choices[0].message.content in ("ok", "fine")


def test_required_with_empty_tools_behaves_as_none(tools_client):
    whole = flat(chat(tools_client, tools=[], tool_choice="required", max_tokens=5))
    assert whole["calls"] == [] and whole["finish"] in ("stop", "length")


def test_auto_needs_the_server_flags(client):
    """On the shared server (no tool flags), tool_choice auto, also by default with tools, is a 400 (vLLM)."""
    for kw in ({"tool_choice": "auto"}, {}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="tiny-llama", messages=USER, tools=TOOLS, max_tokens=2, **kw)
        assert "--enable-auto-tool-choice" in info.value.body["message"]
