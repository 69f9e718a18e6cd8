"""One streamed completion or chat request, timed chunk by chunk the way `vllm bench serve` times it.

The timeline of one request, as measured here (and by vLLM's benchmark client):

    send          first chunk with choices      each later chunk with choices   usage chunk  [DONE]
    |------ ttft -------|-- itl[0] --|-- itl[1] --| ... |                        (not timed)
    |------------------------------- latency (E2EL) ---------|

A chunk "with choices" is any chunk whose `choices` list is not empty, whatever its text: the chat role
chunk and chunks of empty text (a special token) count. One chunk may carry several tokens; it is still
one ITL sample, and the token count comes from the usage chunk.
"""

from __future__ import annotations

import codecs
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ENDPOINTS = {"openai": "/v1/completions", "openai-chat": "/v1/chat/completions"}

# Long enough for the server's error message, short enough to keep result files readable.
_MAX_ERROR_CHARS = 2000


@dataclass(slots=True)
class RequestOutcome:
    """What one request measured. Times are `time.perf_counter()` seconds."""

    success: bool = False
    start_time: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    # usage.completion_tokens; None when the server sent no usage (metrics then tokenize the text).
    output_tokens: int | None = None
    # The dataset's count until the usage chunk's prompt_tokens replaces it (as vLLM does).
    prompt_len: int = 0
    generated_text: str = ""
    error: str = ""


class SSEDecoder:
    """Bytes in, the `data` of each complete server-sent event out; events end at a blank line."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._partial_line = ""
        self._data_lines: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._partial_line = (self._partial_line + self._utf8.decode(chunk)).split("\n")
        events = []
        for line in lines:
            line = line.removesuffix("\r")
            if not line:
                if self._data_lines:
                    events.append("\n".join(self._data_lines))
                    self._data_lines = []
            elif line.startswith("data:"):
                self._data_lines.append(line.removeprefix("data:").removeprefix(" "))
            # Comments (": ping") and the event/id/retry fields carry nothing a completion stream needs.
        return events

    def close(self) -> list[str]:
        """The event a stream ended without terminating, if any."""
        return self.feed(b"\n\n")


def build_payload(
    backend: str, model: str, prompt: str, max_tokens: int, ignore_eos: bool, temperature: float
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": temperature,
    }
    if backend == "openai-chat":
        payload["messages"] = [{"role": "user", "content": prompt}]
        payload["max_completion_tokens"] = max_tokens
    else:
        payload["prompt"] = prompt
        payload["max_tokens"] = max_tokens
    if ignore_eos:
        payload["ignore_eos"] = True
    return payload


class StreamError(Exception):
    """An error event inside a 200 stream: the request failed after it started."""


class _StreamTimer:
    """Folds a response's events, with their arrival times, into a RequestOutcome."""

    def __init__(self, backend: str, outcome: RequestOutcome) -> None:
        self._chat = backend == "openai-chat"
        self._outcome = outcome
        self._last_time: float | None = None
        self._text_parts: list[str] = []

    def on_event(self, data: str, now: float) -> None:
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if error := chunk.get("error"):
            message = error.get("message", error) if isinstance(error, dict) else error
            raise StreamError(f"error event: {message}")
        outcome = self._outcome
        if usage := chunk.get("usage"):
            outcome.output_tokens = usage.get("completion_tokens")
            if (prompt_tokens := usage.get("prompt_tokens")) is not None:
                outcome.prompt_len = prompt_tokens
        if choices := chunk.get("choices"):
            if self._last_time is None:
                outcome.ttft = now - outcome.start_time
            else:
                outcome.itl.append(now - self._last_time)
            self._last_time = now
            choice = choices[0]
            text = (choice.get("delta") or {}).get("content") if self._chat else choice.get("text")
            self._text_parts.append(text or "")

    def finish(self) -> None:
        outcome = self._outcome
        outcome.generated_text = "".join(self._text_parts)
        if self._last_time is None:
            outcome.error = "the stream ended without a chunk with choices, so it has no first token"
            return
        outcome.latency = self._last_time - outcome.start_time
        outcome.success = True


async def send_request(
    session: aiohttp.ClientSession, url: str, backend: str, payload: dict[str, Any], prompt_len: int
) -> RequestOutcome:
    """Never raises for a failed request: it comes back with success False and the error's text."""
    outcome = RequestOutcome(prompt_len=prompt_len)
    timer = _StreamTimer(backend, outcome)
    outcome.start_time = time.perf_counter()
    try:
        async with session.post(url, json=payload) as response:
            if response.status != 200:
                body = await response.text()
                outcome.error = f"HTTP {response.status} {response.reason}: {body[:_MAX_ERROR_CHARS]}"
                return outcome
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                for data in decoder.feed(chunk):
                    timer.on_event(data, now)
            for data in decoder.close():
                timer.on_event(data, time.perf_counter())
        timer.finish()
    except Exception as e:  # a reset connection, a timeout, bad JSON, an error event: this request failed
        outcome.success = False
        outcome.error = f"{type(e).__name__}: {e}"[:_MAX_ERROR_CHARS]
    return outcome
