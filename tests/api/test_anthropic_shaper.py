"""The Messages stream shaper driven by hand-written engine outputs: thinking (--reasoning-parser) and tool
calls read by --tool-call-parser (tool_choice auto) become blocks, and the streamed events rebuild exactly
the non-streamed message, however the text was cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from kvserve.api.anthropic.shaper import MessageShaper
from kvserve.outputs import RequestOutput, RequestTimes
from kvserve.text.message_parser import MessageParser
from kvserve.text.reasoning.registry import reasoning_parser
from kvserve.text.tools.registry import tool_parser

TEXT = (
    "<think>The user wants weather.</think>Let me check."
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}</tool_call>'
    '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
)
PARSER = MessageParser(reasoning_parser("deepseek_r1"), tool_parser("hermes"))


def output(text: str, num_output_tokens: int, finish_reason: str | None = None) -> RequestOutput:
    return RequestOutput(
        "msg_1", text, [7] * bool(text), 4, num_output_tokens, 0, [1, 2, 3, 4], RequestTimes(0.0),
        finish_reason is not None, finish_reason,
    )  # fmt: skip


def pieces(text: str, size: int) -> list[RequestOutput]:
    cuts = [text[i : i + size] for i in range(0, len(text), size)]
    return [output(cut, i + 1, "stop" if i == len(cuts) - 1 else None) for i, cut in enumerate(cuts)]


def events(shaper: MessageShaper, outputs: list[RequestOutput]) -> list[tuple[str, dict]]:
    async def generation() -> AsyncIterator[RequestOutput]:
        for item in outputs:
            yield item

    async def run() -> list[bytes]:
        return [event async for event in shaper.events([generation()])]

    parsed = []
    for frame in asyncio.run(run()):
        head, data = frame.decode().removesuffix("\n\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}"
        parsed.append((payload["type"], payload))
    return parsed


def rebuilt(stream: list[tuple[str, dict]]) -> tuple[list[dict], dict]:
    """The blocks a client accumulates from the events, checking their order as it goes."""
    kinds = [kind for kind, _ in stream]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    blocks: list[dict] = []
    open_index = None
    for kind, event in stream[2:-2]:
        if kind == "content_block_start":
            assert open_index is None and event["index"] == len(blocks)
            open_index = event["index"]
            blocks.append(dict(event["content_block"], partial_json=""))
        elif kind == "content_block_delta":
            assert event["index"] == open_index
            block, delta = blocks[open_index], event["delta"]
            if delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:  # the delta's field and the block's have the same name
                key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
                block[key[delta["type"]]] += delta[key[delta["type"]]]
        else:
            assert kind == "content_block_stop" and event["index"] == open_index
            open_index = None
    assert open_index is None
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block["partial_json"])
        del block["partial_json"]
    return blocks, stream[-2][1]


def comparable(blocks: list[dict]) -> list[dict]:
    """Ids and signatures are random per response."""
    return [{k: v for k, v in block.items() if k not in ("id", "signature")} for block in blocks]


@pytest.mark.parametrize("size", [1, 3, 7, len(TEXT)])
def test_thinking_text_and_tool_calls_stream_as_the_whole_message(size):
    whole = MessageShaper("msg_1", "m", output("", 0), PARSER).message(output(TEXT, 30, "stop"))
    assert [block.type for block in whole.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert whole.content[0].thinking == "The user wants weather." and whole.content[1].text == "Let me check."
    assert whole.content[2].name == "get_weather" and whole.content[2].input == {"city": "Paris", "days": 2}
    assert whole.content[3].input == {} and whole.content[3].id.startswith("toolu_")
    assert whole.stop_reason == "tool_use"
    streamed = events(MessageShaper("msg_1", "m", output("", 0), PARSER), pieces(TEXT, size))
    blocks, message_delta = rebuilt(streamed)
    assert comparable(blocks) == comparable([block.model_dump() for block in whole.content])
    assert all(block["signature"] for block in blocks if block["type"] == "thinking")
    assert message_delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert message_delta["usage"] == {"input_tokens": 4, "output_tokens": len(pieces(TEXT, size))}


def test_plain_text_stop_reasons():
    shaper = MessageShaper("msg_1", "m", output("", 0), None)
    ended = output("Hi there", 2, "stop")
    assert shaper.message(ended).stop_reason == "end_turn"
    stopped = output("Hi", 1, "stop")
    stopped.stop_reason = "END"
    message = shaper.message(stopped)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    assert shaper.message(output("Hi", 9, "length")).stop_reason == "max_tokens"
    empty = rebuilt(events(MessageShaper("msg_1", "m", output("", 0), None), [output("", 0, "stop")]))
    assert empty == (
        [],
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 4, "output_tokens": 0},
        },
    )


def test_a_call_cut_by_max_tokens_comes_back_as_its_text():
    named = MessageParser(named_function="get_weather")
    message = MessageShaper("msg_1", "m", output("", 0), named).message(output('{"city": "Par', 5, "length"))
    assert message.stop_reason == "max_tokens"
    assert [block.model_dump() for block in message.content] == [{"type": "text", "text": '{"city": "Par'}]
