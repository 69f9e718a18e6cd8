"""Servers for the reliability tests: in-process (so a test can read the engine's counters and KV blocks)
with the tiny Llama, its ChatML template and whatever limits the test needs."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from typing import Any

from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.text.chat_template import ChatTemplate
from tests.api.in_process_server import InProcessServer
from tests.api.test_disconnect import raw_request
from tests.engine_helpers import MiB

# In flight for seconds on any machine, on the long-context model (fixture long_context_model).
LONG = {"prompt": "hello " * 8, "max_tokens": 8000, "min_tokens": 8000, "ignore_eos": True}


def live_server(model_dir, settings: dict[str, Any] | None = None, **engine: Any) -> InProcessServer:
    config = EngineConfig(model=str(model_dir), kv_cache_memory=16 * MiB, block_size=4, **engine)

    def make_settings(running) -> ServerSettings:
        template = ChatTemplate(running.tokenizer.chat_template, special_tokens=running.tokenizer.special_tokens)
        base = ServerSettings(served_model_names=("tiny",), model_root=str(model_dir), chat_template=template)
        return dataclasses.replace(base, **(settings or {}))

    return InProcessServer(config, settings=make_settings)


def request(
    port: int, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, Message, bytes]:
    """(status, headers, body) of one HTTP request; a JSON payload unless it is bytes."""
    data = payload if isinstance(payload, bytes | None) else json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post(port: int, path: str, payload: Any, **kw: Any) -> tuple[int, Message, dict]:
    status, headers, body = request(port, "POST", path, payload, **kw)
    return status, headers, json.loads(body) if body.startswith(b"{") else {"raw": body.decode(errors="replace")}


def open_stream(port: int, path: str, payload: dict) -> socket.socket:
    """A streamed request on a raw socket, read by the test (or closed to disconnect)."""
    return raw_request(port, path, {**payload, "stream": True})


def read_until(sock: socket.socket, marker: bytes, received: bytes = b"", timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def sse_data(received: bytes) -> list[str]:
    """The data of each SSE event in a raw (chunked) HTTP response."""
    lines = (line.strip("\r") for line in received.decode(errors="replace").split("\n"))
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.01)


def kv_free(live: InProcessServer) -> tuple[int, int]:
    """(free KV blocks, total): O(1) counters of the block pool, read on the server's loop."""

    def read() -> tuple[int, int]:
        pool = live.engine.scheduler.core.block_pool
        return pool.num_free_blocks, pool.num_blocks

    return live.call(read)


def all_blocks_free(live: InProcessServer) -> bool:
    free, total = kv_free(live)
    return free == total
