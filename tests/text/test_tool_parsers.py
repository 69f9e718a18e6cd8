"""Golden tests of the tool-call and reasoning parsers: the final message of each output, and the rule that
streamed deltas concatenate to it for every way of cutting the text (char by char, and at every single cut)."""

from __future__ import annotations

import json
import random

import pytest

from kvserve.text.message_parser import MessageParser, MessageStream, ParsedMessage
from kvserve.text.reasoning.registry import reasoning_parser
from kvserve.text.tools.base import ParsedCall
from kvserve.text.tools.registry import tool_parser
from kvserve.text.tools.required_calls import RequiredCallsParser


def call(name: str, **arguments: object) -> ParsedCall:
    return ParsedCall(name, json.dumps(arguments, ensure_ascii=False))


def streamed(parser: MessageParser, pieces: list[str]) -> ParsedMessage:
    """The message a client rebuilds from the deltas of a stream cut into `pieces`."""
    stream = MessageStream(parser)
    reasoning, content = "", ""
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for i, piece in enumerate(pieces):
        delta = stream.feed(piece, final=i == len(pieces) - 1)
        reasoning += delta.reasoning
        content += delta.content
        for c in delta.calls:
            if c.name is not None:
                assert c.index not in names, "a call's name is sent once"
                assert c.index == len(names), "calls arrive in order"
                names[c.index] = c.name
            arguments[c.index] = arguments.get(c.index, "") + c.arguments
    calls = tuple(ParsedCall(names[i], arguments[i]) for i in sorted(names))
    return ParsedMessage(reasoning, content, calls)


def cuttings(text: str, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    result = [[text], list(text) + [""], [text, ""]]
    result += [[text[:i], text[i:]] for i in range(1, len(text))]
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, 6))) if len(text) > 1 else []
        bounds = [0, *cuts, len(text)]
        result.append([text[a:b] for a, b in zip(bounds, bounds[1:])])
    return result


def check(parser: MessageParser, text: str) -> ParsedMessage:
    final = parser.parse(text, final=True)
    expected = ParsedMessage(final.reasoning, final.content, final.calls)
    for pieces in cuttings(text):
        assert streamed(parser, pieces) == expected, pieces
    for call_ in final.calls:
        assert isinstance(json.loads(call_.arguments), dict)
    return final


def tools(name: str) -> MessageParser:
    return MessageParser(tools=tool_parser(name))


# -- hermes -------------------------------------------------------------------------------------------------
HERMES_CASES = [
    ("Just an answer.", "Just an answer.", ()),
    (
        'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "Sure.",
        (call("get_weather", city="Paris"),),
    ),
    ('<tool_call>{"name": "now", "arguments": {}}</tool_call>', "", (call("now"),)),
    ('<tool_call>{"name": "now"}</tool_call>', "", (call("now"),)),  # no arguments at all
    (
        '<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>\n<tool_call>{"name": "b", "arguments": '
        '{"y": [1, 2]}}</tool_call>\n',
        "",
        (call("a", x=1), call("b", y=[1, 2])),
    ),
    # unterminated at the end: a call when its JSON is whole, else text
    ('<tool_call>{"name": "a", "arguments": {"x": "é"}}', "", (call("a", x="é"),)),
    ('Hm <tool_call>{"name": "a", "arguments": {"x"', 'Hm <tool_call>{"name": "a", "arguments": {"x"', ()),
    # a block that is not a call stays text; the calls around it are kept
    (
        '<tool_call>{"name": "a"}</tool_call><tool_call>not json</tool_call>',
        "<tool_call>not json</tool_call>",
        (call("a"),),
    ),
    ('<tool_call>{"name": "a", "arguments": "{\\"k\\": 2}"}</tool_call>', "", (call("a", k=2),)),
    ("a < b and <tool is not a tag", "a < b and <tool is not a tag", ()),
    ('<tool_call>{"name": "a"}</tool_call> and then text', " and then text", (call("a"),)),
]


@pytest.mark.parametrize(("text", "content", "calls"), HERMES_CASES)
def test_hermes(text: str, content: str, calls: tuple[ParsedCall, ...]) -> None:
    final = check(tools("hermes"), text)
    assert (final.content, final.calls) == (content, calls)


# -- llama3_json ----------------------------------------------------------------------------------------------
LLAMA3_CASES = [
    ("The answer is 4.", "The answer is 4.", ()),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", (call("get_weather", city="Paris"),)),
    ('<|python_tag|>{"name": "now", "parameters": {}}', "", (call("now"),)),
    ('{"name": "a", "parameters": {"x": 1}}; {"name": "b", "arguments": {}}', "", (call("a", x=1), call("b"))),
    ('{"answer": 4}', '{"answer": 4}', ()),  # JSON that is not a call is an answer
    ('{"name": "a", "parameters": {"x": ', '{"name": "a", "parameters": {"x": ', ()),  # cut off
    ('{"name": "a", "parameters": {}}; {"name": "b", "par', ' {"name": "b", "par', (call("a"),)),
    ('  {"name": "a"}  ', "", (call("a"),)),
]


@pytest.mark.parametrize(("text", "content", "calls"), LLAMA3_CASES)
def test_llama3_json(text: str, content: str, calls: tuple[ParsedCall, ...]) -> None:
    final = check(tools("llama3_json"), text)
    assert (final.content, final.calls) == (content, calls)


# -- mistral --------------------------------------------------------------------------------------------------
MISTRAL_CASES = [
    ("No tools needed [TOOL] here.", "No tools needed [TOOL] here.", ()),
    (
        'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]',
        "Sure.",
        (call("get_weather", city="Paris"), call("now")),
    ),
    ('[TOOL_CALLS][{"name": "now"}]', "", (call("now"),)),
    (
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]now[ARGS]{}',
        "",
        (call("get_weather", city="Paris"), call("now")),
    ),
    ('[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}', '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}', ()),
    ('[TOOL_CALLS][{"nombre": "a"}]', '[TOOL_CALLS][{"nombre": "a"}]', ()),
    ('[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{"y', '[TOOL_CALLS]b[ARGS]{"y', (call("a", x=1),)),
]


@pytest.mark.parametrize(("text", "content", "calls"), MISTRAL_CASES)
def test_mistral(text: str, content: str, calls: tuple[ParsedCall, ...]) -> None:
    final = check(tools("mistral"), text)
    assert (final.content, final.calls) == (content, calls)


def test_mistral_call_ids_are_nine_alphanumerics() -> None:
    call_id = tool_parser("mistral").call_id()
    assert len(call_id) == 9 and call_id.isalnum()


# -- pythonic -------------------------------------------------------------------------------------------------
PYTHONIC_CASES = [
    ("It is sunny.", "It is sunny.", ()),
    ('[get_weather(city="Paris", days=2)]', "", (call("get_weather", city="Paris", days=2),)),
    (
        "[now(), stop(reason='a ] in a string', flags=[1, None, True])]",
        "",
        (call("now"), call("stop", reason="a ] in a string", flags=[1, None, True])),
    ),
    ("<|python_start|>[now()]<|python_end|>", "", (call("now"),)),
    ("[1, 2, 3]", "[1, 2, 3]", ()),  # a list that is not calls is an answer
    ("[f(x)]", "[f(x)]", ()),  # positional arguments are not a tool call
    ('[f(a="cut', '[f(a="cut', ()),
    ("[now()] done", "done", (call("now"),)),
]


@pytest.mark.parametrize(("text", "content", "calls"), PYTHONIC_CASES)
def test_pythonic(text: str, content: str, calls: tuple[ParsedCall, ...]) -> None:
    final = check(tools("pythonic"), text)
    assert (final.content, final.calls) == (content, calls)


# -- tool_choice required and named ---------------------------------------------------------------------------
REQUIRED_CASES = [
    ('[{"name": "a", "parameters": {"x": 1}}, {"name": "b", "parameters": {}}]', "", (call("a", x=1), call("b"))),
    ('[{"name": "a", "parameters": {"x": 1}}, {"name": "b", "para', ' {"name": "b", "para', (call("a", x=1),)),
]


@pytest.mark.parametrize(("text", "content", "calls"), REQUIRED_CASES)
def test_required_calls(text: str, content: str, calls: tuple[ParsedCall, ...]) -> None:
    final = check(MessageParser(tools=RequiredCallsParser()), text)
    assert (final.content, final.calls) == (content, calls)


def test_named_function_streams_its_arguments() -> None:
    parser = MessageParser(named_function="get_weather")
    final = check(parser, '{"city": "Paris"}')
    assert final.calls == (ParsedCall("get_weather", '{"city": "Paris"}'),)
    stream = MessageStream(parser)
    deltas = [stream.feed(piece, final=False) for piece in ['{"ci', 'ty": ', '"Paris"}']]
    assert [(d.calls[0].name, d.calls[0].arguments) for d in deltas] == [
        ("get_weather", '{"ci'),
        (None, 'ty": '),
        (None, '"Paris"}'),
    ]


# -- reasoning ------------------------------------------------------------------------------------------------
REASONING_CASES = [
    ("deepseek_r1", "<think>Let me see.</think>It is 4.", "Let me see.", "It is 4."),
    ("deepseek_r1", "Let me see.</think>\n\nIt is 4.", "Let me see.", "\n\nIt is 4."),
    ("deepseek_r1", "Still thinking when cut", "Still thinking when cut", ""),
    ("qwen3", "<think>\nHm.\n</think>\n\nFour.", "\nHm.\n", "\n\nFour."),
    ("qwen3", "Four, without thinking.", "", "Four, without thinking."),
    ("qwen3", "<think>cut off", "cut off", ""),
    ("qwen3", "<thinking is not the tag", "", "<thinking is not the tag"),
]


@pytest.mark.parametrize(("name", "text", "reasoning", "content"), REASONING_CASES)
def test_reasoning(name: str, text: str, reasoning: str, content: str) -> None:
    final = check(MessageParser(reasoning=reasoning_parser(name)), text)
    assert (final.reasoning, final.content) == (reasoning, content)


def test_reasoning_then_tool_calls() -> None:
    parser = MessageParser(reasoning=reasoning_parser("qwen3"), tools=tool_parser("hermes"))
    final = check(parser, '<think>I need the weather.</think>\n<tool_call>{"name": "w", "arguments": {}}</tool_call>')
    assert final == ParsedMessage("I need the weather.", "\n", (call("w"),), reasoning_ended=True)


def test_unknown_parsers_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tool call parser"):
        tool_parser("nope")
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        reasoning_parser("nope")
