"""The shared stream loop with each family's hooks, driven by hand-written engine outputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

from kvserve.api.context import ServingContext
from kvserve.api.openai.chat import _Chat
from kvserve.api.openai.chat_protocol import ChatCompletionRequest
from kvserve.api.openai.completion_protocol import CompletionRequest
from kvserve.api.openai.completions import _Completion
from kvserve.api.openai.request_options import RequestOptions
from kvserve.api.settings import ServerSettings
from kvserve.api.sse import DONE, sse_event
from kvserve.outputs import RequestOutput, RequestTimes

PROMPT_IDS = [5, 6, 7]
CTX = ServingContext(
    SimpleNamespace(tokenizer=None),
    ServerSettings(served_model_names=("m",), model_root="m", chat_template=None, system_fingerprint="fp"),
)


def output(text: str, num_output_tokens: int, finish_reason: str | None = None) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        text=text,
        token_ids=[100 + num_output_tokens] if text else [],
        num_prompt_tokens=len(PROMPT_IDS),
        num_output_tokens=num_output_tokens,
        num_cached_tokens=0,
        prompt_token_ids=PROMPT_IDS,
        times=RequestTimes(arrival=0.0),
        finished=finish_reason is not None,
        finish_reason=finish_reason,
    )


async def generation(*outputs: RequestOutput) -> AsyncIterator[RequestOutput]:
    for item in outputs:
        yield item


def streamed(shaper, *outputs: RequestOutput) -> list[bytes]:
    async def run() -> list[bytes]:
        return [event async for event in shaper.stream([generation(*outputs)])]

    return asyncio.run(run())


def options(request_id: str, include_usage: bool) -> RequestOptions:
    return RequestOptions(request_id, include_usage, continuous_usage=False, prompt_tokens_details=False)


DELTAS = (output("Hel", 1), output("lo", 2), output("", 2), output("!", 3, "length"))


def test_completion_stream_first_chunk_full_then_plain_then_finish_and_usage():
    body = CompletionRequest.model_validate({"prompt": "Say", "echo": True, "stream": True})
    shaper = _Completion(body, options("cmpl-1", True), "m", ["Say"], [output("", 0)], False, CTX)
    shaper.created = 9

    def chunk(text: str, finish_reason: str | None = None, usage: dict | None = None) -> dict:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 9,
            "model": "m",
            "choices": [choice] if usage is None else [],
            "usage": usage,
            "system_fingerprint": None if usage is None else "fp",
        }

    usage = {"prompt_tokens": 3, "total_tokens": 6, "completion_tokens": 3, "prompt_tokens_details": None}
    assert streamed(shaper, *DELTAS) == [
        sse_event(chunk("SayHel")),  # the echoed prompt rides on the choice's first chunk
        sse_event(chunk("lo")),  # the empty delta is skipped
        sse_event(chunk("!", "length")),
        sse_event(chunk("", usage=usage)),
        DONE,
    ]
    assert shaper.accepted[0].text == "Hello!"


def test_chat_stream_opens_with_the_role_then_content_then_the_fingerprinted_finish():
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    shaper = _Chat(body, options("chatcmpl-1", False), "m", [output("", 0)], CTX)
    shaper.created = 9

    def chunk(delta: dict, finish: dict | None = None, **extra) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, **(finish or {})}
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 9, "model": "m"} | {
            "choices": [choice],
            **extra,
        }

    assert streamed(shaper, *DELTAS) == [
        sse_event(chunk({"role": "assistant", "content": ""})),
        sse_event(chunk({"content": "Hel"})),
        sse_event(chunk({"content": "lo"})),
        sse_event(chunk({"content": "!"}, {"finish_reason": "length", "stop_reason": None}, system_fingerprint="fp")),
        DONE,
    ]
